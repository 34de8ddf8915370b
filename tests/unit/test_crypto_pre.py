"""Umbral wrapper: key capsules, threshold grants, and the ways a grant must not open."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pienode.crypto import pre, pre_rules
from pienode.crypto.keys import PrivateKey
from pienode.crypto.pre import PreError, PrePublicKey, PreSecretKey
from pienode.errors import CryptoError

T, N = 2, 4  # the 4-hospital consortium: f = 1, t = f + 1


class Grant:
    """One record version, one requester, one t-of-n grant, one cfrag per node."""

    def __init__(self, t: int = T, n: int = N, receiver: PreSecretKey | None = None) -> None:
        self.delegating_sk, self.delegating_pk = pre.generate_keypair()
        self.signer = PreSecretKey.generate()
        self.verifying_pk = self.signer.public_key
        self.receiving_sk = receiver or PreSecretKey.generate()
        self.receiving_pk = self.receiving_sk.public_key
        self.key_capsule, self.dek = pre.encapsulate(self.delegating_pk)
        self.kfrags = pre.generate_kfrags(
            self.delegating_sk, self.receiving_pk, self.signer, t, n
        )
        self.cfrags = [self.reencrypt(k) for k in self.kfrags]

    def keys(self) -> dict[str, PrePublicKey]:
        return {
            "delegating_pk": self.delegating_pk,
            "receiving_pk": self.receiving_pk,
            "verifying_pk": self.verifying_pk,
        }

    def reencrypt(self, kfrag: bytes, key_capsule: bytes | None = None) -> bytes:
        return pre.reencrypt(key_capsule or self.key_capsule, kfrag, **self.keys())

    def open(self, cfrags: list[bytes], key_capsule: bytes | None = None) -> bytes:
        return pre.open_reencrypted(
            self.receiving_sk,
            self.delegating_pk,
            key_capsule or self.key_capsule,
            cfrags,
            verifying_pk=self.verifying_pk,
        )


@pytest.fixture(scope="module")
def grant() -> Grant:
    return Grant()


# --- keys ----------------------------------------------------------------------------------


def test_key_serialisation_round_trip() -> None:
    sk = PreSecretKey.generate()
    raw = sk.to_bytes()
    assert len(raw) == 32
    again = PreSecretKey.from_bytes(raw)
    assert again.public_key == sk.public_key
    pk = PrePublicKey.from_bytes(sk.public_key.to_bytes())
    assert pk == sk.public_key and len(pk.data) == 33
    assert raw.hex() not in repr(sk)


def test_pre_key_from_signing_key_bytes_has_the_same_public_key() -> None:
    signing = PrivateKey.generate()
    assert PreSecretKey.from_bytes(signing.to_bytes()).public_key.data == signing.public_key.data


@pytest.mark.parametrize("bad", [b"", b"\x00" * 32, b"\xff" * 32, b"\x01" * 31])
def test_bad_secret_keys(bad: bytes) -> None:
    with pytest.raises(CryptoError):
        PreSecretKey.from_bytes(bad)


@pytest.mark.parametrize("bad", [b"\x02" + b"\x00" * 32, b"\x05" + b"\x01" * 32, b"\x02" * 32])
def test_bad_public_keys(bad: bytes) -> None:
    with pytest.raises(CryptoError):
        PrePublicKey.from_bytes(bad)


# --- key capsules --------------------------------------------------------------------------


def test_encapsulate_and_open_original(grant: Grant) -> None:
    assert len(grant.dek) == 32
    assert grant.dek not in grant.key_capsule
    assert grant.key_capsule[0] == pre_rules.KEY_CAPSULE_VERSION
    assert pre.open_original(grant.delegating_sk, grant.key_capsule) == grant.dek


def test_each_encapsulation_has_a_fresh_dek(grant: Grant) -> None:
    kc, dek = pre.encapsulate(grant.delegating_pk)
    assert dek != grant.dek and kc != grant.key_capsule


def test_open_original_with_wrong_key_fails(grant: Grant) -> None:
    with pytest.raises(PreError):
        pre.open_original(grant.receiving_sk, grant.key_capsule)


def test_tampered_key_capsule_fails(grant: Grant) -> None:
    kc = grant.key_capsule
    for pos in [0, 1, 2, 5, 40, len(kc) - 30, len(kc) - 1]:
        bad = bytearray(kc)
        bad[pos] ^= 0x01
        with pytest.raises(CryptoError):
            pre.open_original(grant.delegating_sk, bytes(bad))
    for n in [0, 1, 3, 50, len(kc) - 1]:
        with pytest.raises(CryptoError):
            pre.open_original(grant.delegating_sk, kc[:n])


def test_split_key_capsule(grant: Grant) -> None:
    capsule, ciphertext = pre_rules.split_key_capsule(grant.key_capsule)
    assert len(ciphertext) == 24 + 32 + 16  # XChaCha20 nonce, DEK, tag
    # A node may be handed the bare capsule instead of the whole key capsule.
    cfrag = pre.reencrypt(capsule, grant.kfrags[0], **grant.keys())
    assert grant.open([cfrag, grant.cfrags[1]]) == grant.dek


# --- thresholds ----------------------------------------------------------------------------


def test_any_t_of_n_nodes_open_the_dek(grant: Grant) -> None:
    for combo in itertools.combinations(grant.cfrags, T):
        assert grant.open(list(combo)) == grant.dek
    assert grant.open(grant.cfrags) == grant.dek  # more than t is fine too


def test_t_minus_one_fragments_open_nothing(grant: Grant) -> None:
    for cfrag in grant.cfrags:
        with pytest.raises(PreError, match="fewer than the threshold"):
            grant.open([cfrag])
    with pytest.raises(PreError):
        grant.open([])


def test_duplicated_fragment_does_not_count_twice(grant: Grant) -> None:
    with pytest.raises(PreError):
        grant.open([grant.cfrags[0], grant.cfrags[0]])


def test_three_of_seven() -> None:
    g = Grant(t=3, n=7)
    assert g.open(g.cfrags[4:7]) == g.dek
    with pytest.raises(PreError):
        g.open(g.cfrags[:2])


@pytest.mark.parametrize("n,t", [(1, 1), (2, 2), (3, 2), (4, 2), (7, 3), (10, 4), (13, 5)])
def test_grant_threshold(n: int, t: int) -> None:
    assert pre_rules.grant_threshold(n) == t


@pytest.mark.parametrize("t,n", [(1, 4), (1, 2), (0, 4), (5, 4), (2, 0), (2, 256)])
def test_unsafe_or_impossible_thresholds_are_refused(t: int, n: int, grant: Grant) -> None:
    with pytest.raises(PreError):
        pre.generate_kfrags(grant.delegating_sk, grant.receiving_pk, grant.signer, t, n)


def test_single_node_grant_is_allowed_only_as_one_of_one() -> None:
    # The only 1-threshold grant: a one-hospital consortium (f = 0). The trap (a whole kfrag
    # plus the delegatee's key reveals the delegating key) is contained there because each
    # record version has its own delegating key; multi-node grants always need t >= 2.
    g = Grant(t=1, n=1)
    assert g.open(g.cfrags) == g.dek


# --- wrong grant, wrong requester, wrong capsule -------------------------------------------


def test_kfrag_for_requester_a_does_not_serve_requester_b(grant: Grant) -> None:
    other = PreSecretKey.generate().public_key
    keys = grant.keys() | {"receiving_pk": other}
    with pytest.raises(PreError, match="kfrag does not match"):
        pre.reencrypt(grant.key_capsule, grant.kfrags[0], **keys)
    with pytest.raises(PreError):
        pre.verify_kfrag(grant.kfrags[0], **keys)


def test_cfrags_for_requester_a_open_nothing_for_requester_b(grant: Grant) -> None:
    b = PreSecretKey.generate()
    with pytest.raises(PreError):
        pre.open_reencrypted(
            b, grant.delegating_pk, grant.key_capsule, grant.cfrags, verifying_pk=grant.verifying_pk
        )


def test_kfrag_checked_against_record_key_and_signer(grant: Grant) -> None:
    pre.verify_kfrag(grant.kfrags[0], **grant.keys())
    stranger = PreSecretKey.generate().public_key
    for name in ("delegating_pk", "verifying_pk"):
        with pytest.raises(PreError):
            pre.reencrypt(grant.key_capsule, grant.kfrags[0], **(grant.keys() | {name: stranger}))


def test_tampered_kfrag_is_refused(grant: Grant) -> None:
    # Umbral's node-side check covers everything but the signature meant for the receiver,
    # which travels inside the cfrag and is checked by the requester: so every bit flip is
    # caught by the node or, failing that, by the requester.
    kf = grant.kfrags[0]
    refused_by_node = 0
    for pos in range(0, len(kf), 3):
        bad = bytearray(kf)
        bad[pos] ^= 0x04
        try:
            cfrag = pre.reencrypt(grant.key_capsule, bytes(bad), **grant.keys())
        except CryptoError:
            refused_by_node += 1
            continue
        with pytest.raises(PreError, match="cfrag does not match"):
            grant.open([cfrag, grant.cfrags[1]])
    assert refused_by_node > len(kf) // 3 * 3 // 4
    with pytest.raises(CryptoError):
        pre.reencrypt(grant.key_capsule, b"not a kfrag", **grant.keys())


def test_cfrags_from_another_capsule_fail(grant: Grant) -> None:
    # Same grant keys, another record version's capsule under the same delegating key.
    kc2, _ = pre.encapsulate(grant.delegating_pk)
    foreign = grant.reencrypt(grant.kfrags[2], kc2)
    with pytest.raises(PreError, match="cfrag does not match"):
        grant.open([grant.cfrags[0], foreign])
    with pytest.raises(PreError):
        pre.verify_cfrag(foreign, grant.key_capsule, **grant.keys())
    pre.verify_cfrag(foreign, kc2, **grant.keys())


def test_cfrags_from_two_grants_do_not_combine() -> None:
    # Two grants of the same record to the same requester: fragments of one do not complete
    # the other (each grant is its own polynomial).
    g = Grant()
    kfrags2 = pre.generate_kfrags(g.delegating_sk, g.receiving_pk, g.signer, T, N)
    cfrag2 = g.reencrypt(kfrags2[1])
    with pytest.raises(PreError):
        g.open([g.cfrags[0], cfrag2])


def test_tampered_cfrag_is_refused(grant: Grant) -> None:
    cf = grant.cfrags[0]
    for pos in [7, len(cf) // 2, len(cf) - 3]:
        bad = bytearray(cf)
        bad[pos] ^= 0x10
        with pytest.raises(CryptoError):
            grant.open([bytes(bad), grant.cfrags[1]])


def test_nothing_on_chain_plus_requesters_key_opens_another_record(grant: Grant) -> None:
    # The requester of record 1 holds its cfrags; record 2 (another delegating key) stays shut
    # even with everything on chain (its key capsule and public keys).
    other = Grant(receiver=grant.receiving_sk)
    with pytest.raises(PreError):
        pre.open_reencrypted(
            grant.receiving_sk,
            other.delegating_pk,
            other.key_capsule,
            grant.cfrags,
            verifying_pk=grant.verifying_pk,
        )
    with pytest.raises(PreError):
        pre.open_original(grant.receiving_sk, other.key_capsule)


def test_errors_are_crypto_errors_with_a_message(grant: Grant) -> None:
    with pytest.raises(CryptoError) as info:
        grant.open([grant.cfrags[0]])
    assert info.value.message and info.value.status == 400
    assert grant.dek.hex() not in str(info.value)


def test_dek_is_random_bytes(grant: Grant) -> None:
    deks = {pre.encapsulate(grant.delegating_pk)[1] for _ in range(50)}
    assert len(deks) == 50


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=st.binary(max_size=400), pos=st.integers(0, 399), byte=st.integers(0, 255))
def test_malformed_input_only_ever_raises_crypto_error(
    grant: Grant, junk: bytes, pos: int, byte: int
) -> None:
    # Nodes parse kfrags, capsules and keys that come from other people: whatever the bytes,
    # the only failure is a CryptoError (never a panic or an unrelated exception).
    def flipped(data: bytes) -> bytes:
        b = bytearray(data)
        b[pos % len(b)] ^= byte or 1
        return bytes(b)

    attempts: list[Callable[[], object]] = [
        lambda: pre.reencrypt(junk, grant.kfrags[0], **grant.keys()),
        lambda: pre.reencrypt(grant.key_capsule, junk, **grant.keys()),
        lambda: pre.reencrypt(flipped(grant.key_capsule), grant.kfrags[0], **grant.keys()),
        lambda: grant.open([junk, grant.cfrags[1]]),
        lambda: grant.open([grant.cfrags[0], grant.cfrags[1]], flipped(grant.key_capsule)),
        lambda: pre.open_original(grant.delegating_sk, junk),
        lambda: PrePublicKey.from_bytes(junk[:33].ljust(33, b"\x02")),
        lambda: PreSecretKey.from_bytes(junk[:32].ljust(32, b"\x00")),
    ]
    for attempt in attempts:
        try:
            attempt()
        except CryptoError:
            pass


def test_pre_is_the_one_module_that_imports_umbral() -> None:
    """README: "pienode/crypto/pre.py is the one place to change if that moves"."""
    import ast
    from pathlib import Path

    import pienode

    root = Path(pienode.__file__).parent
    importers = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "umbral_pre" for n in names):
                importers.append(path.relative_to(root).as_posix())
    assert importers == ["crypto/pre.py"]


def test_key_capsule_format_round_trips_without_umbral() -> None:
    packed = pre_rules.pack_key_capsule(b"C" * 98, b"D" * 72)
    assert packed[:3] == bytes([pre_rules.KEY_CAPSULE_VERSION, 0, 98])
    assert pre_rules.looks_like_key_capsule(packed)
    assert pre_rules.split_key_capsule(packed) == (b"C" * 98, b"D" * 72)
    for bad in (b"", b"\x01\x00", b"\x02" + packed[1:], packed[:3 + 98]):
        with pytest.raises(PreError):
            pre_rules.split_key_capsule(bad)
