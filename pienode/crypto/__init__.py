"""Cryptography behind small modules: signatures (``keys``), proxy re-encryption (``pre``),
streaming authenticated encryption of records (``stream``)."""
