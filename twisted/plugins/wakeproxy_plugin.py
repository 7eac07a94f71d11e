"""twistd plugin: ``twistd wakeproxy``. Importing this must not import the application."""

from twisted.application.service import ServiceMaker

wakeproxy = ServiceMaker(
    "wakeproxy",
    "wakeproxy.tap",
    "Scale-to-zero front door: holds requests, wakes Docker containers, replays.",
    "wakeproxy",
)
