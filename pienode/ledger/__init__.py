"""The ledger: blocks (hash chain, Merkle roots, commit certificates), world state,
record indexes, receipts; one atomic synced write per block."""
