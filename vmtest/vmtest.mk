# Issue 13: minirt's kernel tests in a QEMU guest on a pure cgroup v2 hierarchy.
# `system` installs qemu; vmtest/build-guest installs debootstrap and e2fsprogs
# itself (as root), builds the guest once into $(MINIRT_VMTEST_CACHE)
# (default /var/cache/minirt-vmtest) and rebuilds it only when its package list,
# the pip requirements or the script change. Each run boots it with a fresh copy
# of the source and exits with the guest's pytest status.
#   make test-v2-guest                          every kernel test: ~1.5 min cached, ~3 min cold (TCG, 2 cores)
#   make test-v2-guest VMTEST_ARGS='-k oom'     extra pytest arguments for the guest
.PHONY: test-v2-guest
test-v2-guest: system
	vmtest/run-guest $(VMTEST_ARGS)
