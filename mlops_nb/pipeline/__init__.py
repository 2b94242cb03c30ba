"""The pipeline as plain data: the frozen spec built from parsed notebooks, and params.yaml.

Imports notebook/ only (and the bottom: errors, project).
"""
