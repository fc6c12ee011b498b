"""Small helpers used across segkit (no imports of other segkit layers)."""
