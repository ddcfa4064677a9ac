"""Reference solutions for notebook 4 (containers vs virtual machines)."""


def instances_that_fit(per_instance_bytes, budget_bytes):
    """Whole instances only: round down."""
    return int(budget_bytes // per_instance_bytes)


def kernel_release_from_uname(text):
    """``uname -a``: kernel name, hostname, release, ...: the third field."""
    return text.split()[2]
