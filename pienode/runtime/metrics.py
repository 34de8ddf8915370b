"""Prometheus metrics of one node (``GET /metrics``), in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NodeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.height = Gauge("pie_height", "Committed block height", registry=r)
        self.view = Gauge("pie_view", "Current PBFT view", registry=r)
        self.view_changes = Counter("pie_view_changes", "PBFT view changes seen", registry=r)
        self.commit_latency = Histogram(
            "pie_commit_latency_seconds",
            "Time from admission to commit of a transaction",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
            registry=r,
        )
        self.mempool = Gauge("pie_mempool_size", "Transactions admitted and not yet committed", registry=r)
        self.peers = Gauge("pie_peers_connected", "Peers with a live authenticated link", registry=r)
        self.peer_up = Gauge("pie_peer_up", "1 if the link to a peer is up", ["peer"], registry=r)
        self.txs_committed = Counter("pie_txs_committed", "Transactions committed", ["result"], registry=r)
        self.txs_admitted = Counter("pie_txs_admitted", "Transactions admitted to the mempool", registry=r)
        self.txs_refused = Counter("pie_txs_refused", "Transactions refused at admission", ["reason"], registry=r)
        self.blocks = Counter("pie_blocks_committed", "Blocks committed", ["source"], registry=r)
        self.api_requests = Counter("pie_api_requests", "HTTP API requests", ["status"], registry=r)
        self.bytes_stored = Gauge("pie_file_bytes_stored", "Bytes held by the file store", registry=r)
        self.chunks_repaired = Counter("pie_file_chunks_repaired", "Damaged or missing chunks repaired", registry=r)
        self.contract_steps = Counter("pie_contract_steps", "Metered contract steps executed", registry=r)
        self.contract_failures = Counter("pie_contract_failures", "Contract calls that failed", ["reason"], registry=r)
        self.peer_bad_frames = Gauge("pie_peer_bad_frames", "Garbage or oversized frames from peers or strangers",
                                     registry=r)
        self.consensus_discarded = Gauge("pie_consensus_discarded", "Consensus messages discarded", registry=r)
        self.state_transfers = Counter("pie_state_transfer_blocks", "Blocks installed by state transfer", registry=r)
