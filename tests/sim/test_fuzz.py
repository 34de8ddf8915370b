"""Well-formed, validly signed but arbitrary messages thrown at replicas mid-run.

The random bytes of the unit tests stop at the decoder; these get through it (real
signatures of members, plausible views and sequence numbers, nested proofs) and must still
never make a replica raise.
"""

from __future__ import annotations

import random

import pytest

from pienode.consensus import messages as m
from pienode.consensus.certificate import CommitCertificate, certificate_fields
from tests.sim.simulator import Scenario, Sim


def _message(rng: random.Random, sim: Sim, src: str, view: int, seq: int) -> bytes:
    sg, ids = sim.signer(src), sim.ids
    d = rng.choice([rng.randbytes(32), m.NULL_DIGEST])
    k = rng.randint(0, 11)
    if k == 0:
        batch = rng.choice([None, m.NULL_BATCH_BYTES, rng.randbytes(5), m.Batch(sim.now, (b"x",)).encode()])
        return m.wire(m.make_pre_prepare(view, seq, d, src, sg), batch)
    if k == 1:
        return m.wire(m.make_prepare(view, seq, d, src, sg))
    if k == 2:
        return m.wire(m.make_commit(view, seq, d, src, sg))
    if k == 3:
        return m.wire(m.make_checkpoint(seq, d, src, sg))
    if k in (4, 9):
        cps = tuple(m.make_checkpoint(seq, d, i, sim.signer(i)) for i in rng.sample(ids, rng.randint(0, 4)))
        if k == 4:
            return m.wire(m.make_view_change(view, seq, d, cps, (), src, sg))
        return m.wire(m.make_checkpoint_proof(seq, d, cps, src, sg))
    if k == 5:
        vcs = tuple(m.make_view_change(view, 0, m.GENESIS_DIGEST, (), (), i, sim.signer(i))
                    for i in rng.sample(ids, rng.randint(0, 4)))
        return m.wire(m.make_new_view(view, vcs, (), src, sg))
    if k == 6:
        return m.wire(m.make_status(view, rng.random() < 0.5, seq, seq, src, sg))
    if k == 7:
        return m.wire(m.make_forward((rng.randbytes(10),), src, sg))
    if k == 8:
        cert = CommitCertificate(view, seq, d, tuple((i, rng.randbytes(32)) for i in rng.sample(ids, 3)))
        return m.wire(m.make_committed(seq, rng.randbytes(4), certificate_fields(cert), cert, src, sg))
    if k == 10:
        return m.wire(m.make_batch_fetch(seq, d, src, sg))
    return m.wire(m.make_batch_reply(seq, d, rng.randbytes(8), src, sg))


@pytest.mark.parametrize("trial", range(12))
def test_signed_nonsense_never_raises(trial: int) -> None:
    rng = random.Random(trial)
    sim = Sim(trial, Scenario(n=4, requests=10, config={"checkpoint_interval": 2}))
    sim.setup()
    injected = 0
    while sim.now < 2500 and sim.step():
        if rng.random() > 0.05:
            continue
        src = rng.choice(sim.ids)
        dst = rng.choice([i for i in sim.ids if i != src])
        r = sim.nodes[dst].replica
        if r is None:
            continue
        view = rng.choice([0, r.view, r.view + 1, r.view + rng.randint(0, 5), 2**61])
        seq = max(0, rng.choice([0, 1, r.last_delivered_seq + 1, r.stable_checkpoint + rng.randint(-2, 10), 2**61]))
        sim.process(sim.nodes[dst], r.on_message(src, _message(rng, sim, src, view, seq), sim.now))
        injected += 1
    assert injected > 5
