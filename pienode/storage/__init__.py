"""Key-value storage behind one small interface; plyvel is imported only in ``leveldb``."""

from pienode.storage.kv import Batch, KVStore, MemoryKV, open_kv

__all__ = ["Batch", "KVStore", "MemoryKV", "open_kv"]
