"""Cost of the consensus core alone: 4 replicas in one process, real secp256k1 signatures.

Run: ``python3 -m tests.sim.bench_consensus [txs] [tx_bytes]``. Prints CPU seconds per
committed request summed over all four replicas (the runtime's own costs excluded), i.e. how
much of a 2-core budget ordering takes at a given throughput.
"""

from __future__ import annotations

import os
import sys
import time

from pienode.consensus import ReplicaConfig
from pienode.crypto.keys import PrivateKey
from tests.unit.test_consensus_replica import Pump  # the zero-latency runtime stand-in


def main() -> None:
    txs = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    keys = {f"r{i}": PrivateKey.generate() for i in range(4)}
    pubs = {i: k.public_key for i, k in keys.items()}
    import tests.unit.test_consensus_replica as t

    t.signer = lambda i: (lambda body: keys[i].sign("pbft", body))
    t.verifier = lambda i, body, sig: i in pubs and pubs[i].verify("pbft", body, sig)
    p = Pump(max_inflight_batches=int(os.environ.get("INFLIGHT", "8")))
    payloads = [os.urandom(size) for _ in range(txs)]
    start = time.process_time()
    chunk = int(os.environ.get("PER_MS", "250"))  # arrivals per virtual ms (250k tx/s offered)
    for k in range(0, txs, chunk):
        for payload in payloads[k:k + chunk]:
            for i in p.ids:
                p.apply(i, p.replicas[i].submit(payload, p.now))
        p.advance(1)
    while len(p.delivered["r3"]) == 0 or sum(len(d.batch.requests) for d in p.delivered["r3"]) < txs:
        p.advance(5)
    cpu = time.process_time() - start
    batches = len(p.delivered["r3"])
    print(f"{txs} requests of {size} B in {batches} batches; core CPU {cpu:.2f} s for 4 replicas "
          f"= {cpu / txs * 1e6:.0f} us/request -> ceiling {txs / cpu * 2:.0f} req/s on 2 cores "
          f"(ordering only)")


if __name__ == "__main__":
    main()
