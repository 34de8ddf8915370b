"""The node process: configuration, the asyncio driver that owns the PBFT replica, the
mempool, block execution and commit, state transfer, and the wiring of every subsystem."""
