#!/usr/bin/env bash
# Filter: pass a tool's output through, minus the notices that read like errors but are not (pip's index
# locations missing on this machine, setuptools' "compat editable mode" banner, Docker's legacy-builder
# deprecation notice). Real warnings and errors pass unchanged; the exit status is always 0 (use pipefail).
sed -E \
    -e '/^WARNING: Location .* is ignored: it is neither a file nor a directory\.$/d' \
    -e '/BuildBackendWarning: Compat editable installs/,/mode = _EditableMode\.convert/d' \
    -e '/^DEPRECATED: The legacy builder is deprecated/,/docs\.docker\.com\/go\/buildx/d'
