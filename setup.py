"""Packaging for wakeproxy: the package, its twistd plugin and its dependencies."""

from setuptools import setup

setup(
    name="wakeproxy",
    version="0.1.0",
    description="Scale-to-zero front door for Docker containers: holds, wakes and replays requests.",
    python_requires=">=3.11",
    packages=["wakeproxy", "wakeproxy.api", "wakeproxy.http", "wakeproxy.runtime", "wakeproxy.waking", "twisted.plugins"],
    package_data={"twisted": ["plugins/wakeproxy_plugin.py"], "wakeproxy.api": ["openapi.json"]},
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
