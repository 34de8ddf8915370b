"""Security levels (design paper, Table 5) and the default role-to-level table.

Levels are ordered ``private > moderate > low``: a requester certified at level L may ask
for a record whose access policy requires a level <= L.
"""

from __future__ import annotations

from types import MappingProxyType

LEVELS: tuple[str, ...] = ("low", "moderate", "private")
LEVEL_RANK = MappingProxyType({name: i for i, name in enumerate(LEVELS)})

ROLES: tuple[str, ...] = ("patient", "physician", "researcher", "insurer")

#: Design paper, Table 5: the minimum security level each EMR data type requires.
DEFAULT_DATA_TYPE_LEVELS: dict[str, str] = {
    "medical_information": "private",
    "admission_record": "private",
    "medical_imaging": "private",
    "sensor_data": "moderate",
    "medical_device": "low",
    "clinical_observation": "low",
    "omics": "low",
}

#: Certified level per role (consortium-configurable in genesis). A patient is certified
#: private so a patient can always reach records of their own.
DEFAULT_ROLE_LEVELS: dict[str, str] = {
    "patient": "private",
    "physician": "private",
    "insurer": "moderate",
    "researcher": "low",
}


def satisfies(holder_level: str, required_level: str) -> bool:
    """True if a user certified at ``holder_level`` may ask for ``required_level`` data."""
    return LEVEL_RANK[holder_level] >= LEVEL_RANK[required_level]
