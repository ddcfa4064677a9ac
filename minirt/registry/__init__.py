"""Registries: the OCI distribution API, and the lab's own local registry.

``server`` starts and stops a CNCF Distribution registry (``docker-registry``)
for the lab; ``commands`` is ``minirt registry start|stop|status``.
"""
