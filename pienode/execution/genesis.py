"""The contracts genesis deploys: every ``contracts/*.py`` validated under its file name.

Owns locating and validating the bundled contract sources. Must never deploy anything
itself (the ledger writes the deploy records); it only hands back ``ContractCode``.
"""

from __future__ import annotations

from pathlib import Path

from pienode.execution.types import ContractCode
from pienode.execution.validator import validate

#: contracts/ at the top of the source tree (an editable install keeps it in place)
CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"


def genesis_contracts(directory: Path | None = None) -> dict[str, ContractCode]:
    """Validate every ``*.py`` in ``directory`` (default: ``contracts/``), keyed by name.

    Raises:
        ContractRefused: if a bundled contract does not pass the validator.
        FileNotFoundError: if the directory is missing.
    """
    d = directory or CONTRACTS_DIR
    out: dict[str, ContractCode] = {}
    for path in sorted(d.glob("*.py")):
        if path.name.startswith("_"):
            continue
        out[path.stem] = validate(path.read_text(encoding="utf-8"), path.stem)
    return out
