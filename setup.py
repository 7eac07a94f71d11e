"""Packaging for wakeproxy: the package, its twistd plugin and its dependencies."""

from setuptools import Extension, setup

setup(
    name="wakeproxy",
    version="0.1.0",
    description="Scale-to-zero front door for Docker containers: holds, wakes and replays requests.",
    python_requires=">=3.11",
    # package_dir {"": "."} (the flat layout said explicitly) makes a plain `pip install -e .` put the project
    # root on sys.path (a static .pth), as editable_mode=compat does: Twisted finds plugins by scanning
    # sys.path for twisted/plugins/ directories, so the import-hook finder setuptools uses otherwise hides
    # the dropin from `twistd`.
    package_dir={"": "."},
    packages=["wakeproxy", "wakeproxy.api", "wakeproxy.http", "wakeproxy.runtime", "wakeproxy.waking", "twisted.plugins"],
    package_data={"twisted": ["plugins/wakeproxy_plugin.py"], "wakeproxy.api": ["openapi.json"]},
    # the field scanner's C twin (wakeproxy/http/wire.py has the same in Python): optional, so an install
    # without a C compiler or Python's headers still works, only slower per header field
    ext_modules=[Extension("wakeproxy.http._fieldscan", ["wakeproxy/http/_fieldscan.c"], optional=True)],
    install_requires=[
        "twisted[tls]>=24.7",
        "docker>=7.1",
        "service-identity>=24.1",
        "httptools>=0.6",
        "prometheus-client>=0.20",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout>=2.3", "schemathesis>=4.0", "hypothesis>=6.100", "requests>=2.31", "selenium>=4.20", "websockets>=13"],
    },
)
