"""The benchmark sections, in run order: each is C{run(ctx, section)} filling a L{bench.report.Section}."""

from . import cold, herd, pause, scale, streaming, warm, websocket

SECTIONS = {
    "warm": warm.run,
    "cold": cold.run,
    "herd": herd.run,
    "streaming": streaming.run,
    "websocket": websocket.run,
    "scale": scale.run,
    "pause": pause.run,
}
