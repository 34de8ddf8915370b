"""PIE node: patient-controlled sharing of electronic medical records across a hospital consortium."""

__version__ = "0.1.0"
