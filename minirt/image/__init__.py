"""Images: content-addressed storage, layers and references (OCI image spec).

``store`` keeps blobs by sha256 in an OCI image layout and unpacks each layer
once; ``layer`` writes and safely unpacks layer tarballs; ``reference`` parses
names like ``busybox`` or ``localhost:5000/lab/app:1``; ``busybox`` builds the
lab's default image from the host's static busybox.
Spec: https://github.com/opencontainers/image-spec (image-layout.md, manifest.md,
config.md, layer.md).
"""
