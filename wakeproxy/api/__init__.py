"""The deploy API listener: its resources, sign-in, the passwd file, deploy specs and instance operations."""
