"""One rtnetlink socket (rtnetlink(7)) through pyroute2, for one ``with`` block.

pyroute2's ``IPRoute`` is synchronous on the outside but drives its socket
with an asyncio event loop inside (``run_until_complete`` on every call).
asyncio allows one *running* loop per thread, and a Jupyter kernel's main
thread always has one running, so there every call would fail ("Cannot run
the event loop while another loop is running"). Our netlink calls are short
and blocking, and the notebook's loop waits for them anyway, so for the
duration of the block this thread's loop is set aside (the marker asyncio
keeps of which loop runs here; ``nest_asyncio`` does the same) and the socket
gets a private loop of its own, closed with it (a loop holds descriptors).
"""

import contextlib


@contextlib.contextmanager
def route_socket():
    """``with route_socket() as ipr:`` an ``IPRoute`` on a private event loop."""
    import asyncio

    from pyroute2 import IPRoute  # imported late: ``--network none`` never pays for it
    outer = asyncio.events._get_running_loop()
    asyncio.events._set_running_loop(None)
    loop = asyncio.new_event_loop()
    try:
        with IPRoute(use_event_loop=loop) as ipr:
            yield ipr
    finally:
        loop.close()
        asyncio.events._set_running_loop(outer)
