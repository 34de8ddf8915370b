"""The user's side of EMR sharing: everything secret happens here, in the wallet's process.

Nodes see ciphertext, capsules, sealed fragments and signatures; never a secret key, a
dedicated key (DEK) or a plaintext byte.
"""
