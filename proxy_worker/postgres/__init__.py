"""The PostgreSQL path of the proxy worker: agents connect with any PostgreSQL client.

An agent points ``psql``, psycopg, asyncpg or SQLAlchemy at
``postgresql://<agent>:<gh_ token>@gateway:6432/<target slug>``. The worker relays the
wire protocol (PostgreSQL "Frontend/Backend Protocol", protocol 3.0) message by message
to the target's database, which it logs into itself (the agent never learns that
password), and on the way:

* parses every statement with PostgreSQL's own grammar (:mod:`.sql`, pglast) and applies
  the SQL-aware access rules (:meth:`proxy_worker.policy.Policy.evaluate_statement`):
  allow, deny (SQLSTATE 42501), or hold for approval;
* masks every result value (``DataRow`` and ``COPY`` output, :mod:`.rowmask`) by column
  name rules and the masking engine's detectors;
* records each statement as one exchange of the connection's session.

Modules: :mod:`.protocol` (framing and message codecs), :mod:`.types` (type OIDs,
binary decoders, encodings), :mod:`.copy` (COPY row formats), :mod:`.sql` (statement
analysis), :mod:`.rowmask` (result masking), and the asyncio parts: :mod:`.server`
(listener, cancel keys), :mod:`.relay` (one client connection), :mod:`.auth`
(agent and upstream authentication), :mod:`.tls`, :mod:`.catalog` (column origins),
:mod:`.record` (exchange records). Like the rest of the worker, nothing here imports
Django or touches Gatehouse's own PostgreSQL.
"""
