"""gunicorn settings the Procfile's ``web`` process loads with ``--config python:web.gunicorn_conf``.

The worker class, threads and timeouts stay on the Procfile's command line, where an operator
reads them; this module holds what a command line cannot say.
"""

from __future__ import annotations

from gunicorn.workers import gthread

# A gthread worker gives each new connection a thread that waits this long for the first bytes
# before parking the socket on its poller (gunicorn's default: 5 s). With eight threads, ten
# silent sockets held every thread of a worker for 5 s and the webhooks behind them timed out;
# one second frees the threads quickly, and a real client sends its request at once.
IDLE_CONNECTION_WAIT_SECONDS = 1.0
if hasattr(gthread, "DEFAULT_WORKER_DATA_TIMEOUT"):
    gthread.DEFAULT_WORKER_DATA_TIMEOUT = IDLE_CONNECTION_WAIT_SECONDS

# gunicorn's runtime control socket (in the home directory) is not needed here: one less
# interface to secure, and several instances on one host do not fight over its path.
control_socket_disable = True

# The access log must never hold the webhook Basic credentials, the OAuth code or any token.
logger_class = "web.access_log.RedactingLogger"
