"""Tables of the SQL store (SQLAlchemy Core). Alembic migrations in ``migrations/`` create them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

venues = sa.Table(
    "venues", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("inventory_version", sa.Integer, nullable=False, server_default="0"),
)

devices = sa.Table(
    "devices", metadata,
    sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), primary_key=True),
    sa.Column("mac", sa.String(17), primary_key=True),
    sa.Column("ip", sa.String(45)),  # NULL: DHCP allowed
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("room", sa.String(100), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("vendor", sa.String(20), nullable=False, server_default=""),
    sa.Column("stream", sa.String(300), nullable=False, server_default=""),  # RTSP path to sample
    sa.Column("http_port", sa.Integer, nullable=False, server_default="0"),
    sa.Column("channel", sa.Integer, nullable=False, server_default="0"),  # recorder channel of a camera
)

agents = sa.Table(
    "agents", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), nullable=False),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("enrolled_at", sa.Float, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("online", sa.Boolean, nullable=False, default=False),
    sa.Column("boot", sa.String(64)),
    sa.Column("last_seen", sa.Float),
    sa.Column("last_heartbeat", sa.Float),
    sa.Column("heartbeat_interval", sa.Float),
    sa.Column("outbox_depth", sa.Integer),
    sa.Column("clock_offset", sa.Float),
    sa.Column("acked_seq", sa.BigInteger, nullable=False, default=0),
    # The rest of the ingest ledger, so any collector of a cluster can take over an agent:
    # seqs stored past a hole, holes reported as seq.gap (first -> last), the clock verdict, and
    # a version bumped by every ledger write (a collector whose copy has another version reloads).
    sa.Column("above", sa.JSON, nullable=False, server_default="[]"),
    sa.Column("gaps", sa.JSON, nullable=False, server_default="{}"),
    sa.Column("clock_skewed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("ledger_version", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index("ix_agents_venue", "venue_id"),  # the overview and venue pages list a venue's agents
)

records = sa.Table(
    "records", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("venue_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger),  # NULL for the collector's own events
    sa.Column("boot", sa.String(64)),
    sa.Column("stream", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("vault_index", sa.BigInteger, nullable=False),
    sa.Column("vault_id", sa.String(64), nullable=False, server_default="main"),  # whose vault holds the leaf
    sa.UniqueConstraint("agent_id", "seq", name="uq_records_agent_seq"),
    sa.Index("ix_records_received", "received_at"),
    sa.Index("ix_records_venue_at", "venue_id", "at"),
    sa.Index("ix_records_vault", "vault_id", "vault_index"),
    # Readers behind ingest keep one cursor per vault: each vault's rows are committed in id order
    # by its one collector, whereas ids of two collectors interleave with their commits.
    sa.Index("ix_records_vault_id", "vault_id", "id"),
)

log_lines = sa.Table(
    "log_lines", metadata,
    sa.Column("agent_id", sa.String(64), primary_key=True),
    sa.Column("file_key", sa.String(120), primary_key=True),  # same file across renames, new on replace
    sa.Column("offset", sa.BigInteger, primary_key=True, autoincrement=False),  # byte offset of the line
    sa.Column("venue_id", sa.String(64), nullable=False),
    sa.Column("source", sa.String(100), nullable=False),
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("path", sa.String(1000), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),  # the record that shipped it first
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Index("ix_log_lines_venue_received", "venue_id", "received_at"),
)

dead_letters = sa.Table(
    "dead_letters", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("topic", sa.String(300), nullable=False),
    sa.Column("agent_id", sa.String(64)),
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("payload_size", sa.Integer, nullable=False),
    sa.Column("payload_sha256", sa.String(64), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),  # capped; the hash covers the whole
    sa.Index("ix_dead_letters_reason", "reason"),
)

# -- exam schedule (issue 6): every import is a version; a later import of the same months retires
# the sessions it replaces (``retired_in``) instead of overwriting them.

schedule_versions = sa.Table(
    "schedule_versions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("imported_at", sa.Float, nullable=False),
    sa.Column("imported_by", sa.String(100), nullable=False),
    sa.Column("source", sa.String(300), nullable=False),  # file name as given
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("months", sa.JSON, nullable=False),  # ["2026-12", ...]: the months this plan covers
    sa.Column("sessions", sa.Integer, nullable=False),
)

exam_sessions = sa.Table(
    "exam_sessions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version_id", sa.Integer, sa.ForeignKey("schedule_versions.id"), nullable=False),
    sa.Column("retired_in", sa.Integer, sa.ForeignKey("schedule_versions.id")),  # NULL: in force
    sa.Column("session_id", sa.String(100), nullable=False),
    sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), nullable=False),
    sa.Column("room", sa.String(100), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("end", sa.Float, nullable=False),
    sa.Index("ix_exam_sessions_venue_start", "venue_id", "start"),
    sa.Index("ix_exam_sessions_retired", "retired_in"),
    sa.Index("ix_exam_sessions_start", "start"),  # the overview: all venues' sessions of two days
)

# A venue-declared special situation (特殊情况), e.g. maintenance of the recorder; once the
# authority approves it, matching conditions inside it open no case.
maintenance_windows = sa.Table(
    "maintenance_windows", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), nullable=False),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("end", sa.Float, nullable=False),
    sa.Column("rules", sa.JSON, nullable=False),  # rule ids it covers; [] = every rule
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("declared_by", sa.String(100), nullable=False),
    sa.Column("declared_at", sa.Float, nullable=False),
    sa.Column("status", sa.String(12), nullable=False),  # declared / approved / rejected
    sa.Column("decided_by", sa.String(100)),
    sa.Column("decided_at", sa.Float),
    sa.Column("decision_reason", sa.Text),
    sa.Index("ix_maintenance_venue", "venue_id", "start"),
)

# -- cases (issue 6) ---------------------------------------------------------------------------

cases = sa.Table(
    "cases", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("venue_id", sa.String(64), nullable=False),
    sa.Column("rule_id", sa.Integer, nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("clause", sa.JSON, nullable=False),  # {source, article, text} + also
    sa.Column("severity", sa.String(10), nullable=False),  # the highest reached
    sa.Column("subject", sa.String(300), nullable=False),  # what it is about, e.g. "mac=00:11:..."
    sa.Column("room", sa.String(100), nullable=False, server_default=""),
    sa.Column("session_id", sa.String(100), nullable=False, server_default=""),  # exam affected
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("state", sa.String(8), nullable=False),  # open / closed (the condition)
    sa.Column("status", sa.String(14), nullable=False),  # new / acknowledged / confirmed / dismissed
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("closed_at", sa.Float),
    sa.Column("events", sa.Integer, nullable=False),  # matching events in all (evidence may be capped)
    sa.Column("version", sa.Integer, nullable=False),  # moves on every state change (notifications)
    sa.Index("ix_cases_venue_state", "venue_id", "state"),
    sa.Index("ix_cases_rule", "rule_id"),
)

case_evidence = sa.Table(
    "case_evidence", metadata,
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), primary_key=True),
    sa.Column("record_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("vault_index", sa.BigInteger, nullable=False),
    sa.Column("vault_id", sa.String(64), nullable=False, server_default="main"),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger),
)

# Every change of a case, by the rulebook or a person; ``vault_index`` is set once the running
# collector has written it to the vault (actions taken by the CLI or pages wait for that).
case_actions = sa.Table(
    "case_actions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("role", sa.String(12), nullable=False),  # rulebook, venue / authority (CLI), admin / viewer (pages)
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("vault_index", sa.BigInteger),
    sa.Column("vault_id", sa.String(64), nullable=False, server_default="main"),  # the sealing collector's vault
    sa.Index("ix_case_actions_case", "case_id"),
    sa.Index("ix_case_actions_unvaulted", "vault_index"),
)

# At most one notification per case version and channel; sent_at NULL until delivered.
notifications = sa.Table(
    "notifications", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
    sa.Column("case_version", sa.Integer, nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),  # mqtt / email / webhook:<sha256(url)[:8]>
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("sent_at", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("next_at", sa.Float),  # retry not before this (backoff); NULL = due now
    sa.Column("failed_at", sa.Float),  # given up after max_attempts; the row stays as the record
    sa.UniqueConstraint("case_id", "case_version", "channel", name="uq_notifications_once"),
    sa.Index("ix_notifications_unsent", "sent_at"),  # the notifier looks for NULL every second
)

# The rulebook's working memory: open conditions per venue, rule and subject, and its cursor
# over ``records`` (name "cursor"), so a restarted collector continues where it stopped.
rule_state = sa.Table(
    "rule_state", metadata,
    sa.Column("key", sa.String(400), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
)

# -- readiness and seal (issue 7) --------------------------------------------------------------

# A venue sealed after a passing readiness check (考场准备完成后封闭待用): from ``sealed_at`` until
# the end of the exam day's last session, changes are after-seal evidence (rule 710). A re-check
# re-seals: the newer row keeps the new baseline and ``changes`` against the one it replaces.
seals = sa.Table(
    "seals", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), nullable=False),
    sa.Column("exam_day", sa.String(10), nullable=False),  # YYYY-MM-DD
    sa.Column("sealed_at", sa.Float, nullable=False),
    sa.Column("until", sa.Float, nullable=False),
    sa.Column("report_id", sa.Integer, nullable=False),  # the passing venue report
    sa.Column("baseline", sa.JSON, nullable=False),
    sa.Column("changes", sa.JSON, nullable=False),  # what differs from the seal it replaces ([] for the first)
    sa.Column("replaced_by", sa.Integer),
    sa.Index("ix_seals_venue_until", "venue_id", "until"),
)

# A readiness round: one request to every agent of a venue to run the check for ``exam_day``, by
# the schedule (the day before, [readiness] time) or a person. The CLI writes ``requested`` rows;
# only the running collector publishes them (``sent``, with ``deadline`` and the agents addressed)
# and completes them (``complete``) when every agent answered or the deadline passed.
readiness_rounds = sa.Table(
    "readiness_rounds", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), nullable=False),
    sa.Column("exam_day", sa.String(10), nullable=False),  # YYYY-MM-DD
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("requested_by", sa.String(100), nullable=False),  # "schedule" or a person
    sa.Column("state", sa.String(10), nullable=False),  # requested / sent / complete
    sa.Column("sent_at", sa.Float),
    sa.Column("deadline", sa.Float),  # sent_at + [readiness] deadline_minutes
    sa.Column("agents", sa.JSON),  # the agent ids the command went to
    sa.Index("ix_readiness_rounds_venue_day", "venue_id", "exam_day"),
    sa.Index("ix_readiness_rounds_state", "state"),
)

# One agent's readiness report as it arrived on the ``rpt`` stream; ``vault_index`` is the stable
# link to the signed envelope (``record_id`` is renumbered by a rebuild of the index).
agent_reports = sa.Table(
    "agent_reports", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("round_id", sa.Integer, sa.ForeignKey("readiness_rounds.id")),  # NULL: no such round
    sa.Column("venue_id", sa.String(64), nullable=False),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("exam_day", sa.String(10), nullable=False),
    sa.Column("record_id", sa.BigInteger, nullable=False),
    sa.Column("vault_index", sa.BigInteger, nullable=False),
    sa.Column("vault_id", sa.String(64), nullable=False, server_default="main"),
    sa.Column("seq", sa.BigInteger),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("result", sa.String(10), nullable=False),  # pass / fail / unknown / invalid
    sa.Column("items", sa.JSON, nullable=False),
    sa.Column("baseline", sa.JSON, nullable=False),
    sa.Column("config_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("late", sa.Boolean, nullable=False),  # arrived after its round was complete
    sa.Index("ix_agent_reports_round", "round_id"),
)

# A venue's combined report for one round, kept in the vault as a signed note ("vault/readiness").
venue_reports = sa.Table(
    "venue_reports", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("round_id", sa.Integer, sa.ForeignKey("readiness_rounds.id"), nullable=False),
    sa.Column("venue_id", sa.String(64), nullable=False),
    sa.Column("exam_day", sa.String(10), nullable=False),
    sa.Column("completed_at", sa.Float, nullable=False),
    sa.Column("result", sa.String(10), nullable=False),  # pass / fail / no_report
    sa.Column("items", sa.JSON, nullable=False),  # per item: combined result and each agent's
    sa.Column("agents", sa.JSON, nullable=False),  # per agent: result and the evidence links
    sa.Column("fixed", sa.JSON, nullable=False),  # items that failed in the day's previous report and pass now
    sa.Column("vault_index", sa.BigInteger),  # NULL until the running collector vaulted it
    sa.Column("vault_id", sa.String(64), nullable=False, server_default="main"),
    sa.UniqueConstraint("round_id", name="uq_venue_reports_round"),
    sa.Index("ix_venue_reports_venue_day", "venue_id", "exam_day"),
    sa.Index("ix_venue_reports_unvaulted", "vault_index"),
)

# The readiness consumer's cursor over ``records`` (by vault leaf, which a rebuild keeps).
readiness_state = sa.Table(
    "readiness_state", metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
)

# -- web accounts, sessions, login throttling, audit trail (issue 8) ---------------------------

# People who use the pages: 考试机构管理员 (admin), 考试机构查看 (viewer), 考点操作员 (venue, bound
# to one venue). Passwords are argon2id hashes; a disabled user keeps its row for the audit trail.
users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("role", sa.String(10), nullable=False),  # admin / viewer / venue
    sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id")),  # venue operators only
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("username", name="uq_users_username"),
)

# Server-side sessions: the cookie holds a random token, the table only its SHA-256, so a copy
# of the database does not let anyone in. Each session has its own CSRF token.
web_sessions = sa.Table(
    "web_sessions", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("ip", sa.String(45), nullable=False),
    sa.Column("user_agent", sa.String(300), nullable=False),
    sa.Index("ix_web_sessions_user", "user_id"),
)

# Failed logins, kept so a lock survives a restart; counted per user name and per client address.
login_failures = sa.Table(
    "login_failures", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("ip", sa.String(45), nullable=False),
    sa.Index("ix_login_failures_username_at", "username", "at"),
    sa.Index("ix_login_failures_ip_at", "ip", "at"),
)

# A lock in force: key "user:<name>" or "ip:<address>", locked until ``until``.
login_locks = sa.Table(
    "login_locks", metadata,
    sa.Column("key", sa.String(120), primary_key=True),
    sa.Column("until", sa.Float, nullable=False),
)

# Who did what through the pages: every login, logout, failure and state-changing request.
audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("username", sa.String(64), nullable=False),  # "" before login
    sa.Column("role", sa.String(10), nullable=False),
    sa.Column("ip", sa.String(45), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(300), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Index("ix_audit_log_at", "at"),
    sa.Index("ix_audit_log_username_at", "username", "at"),
)

# Each ``vault verify`` run, so the admin page can show the last result beside the checkpoint age.
vault_verifications = sa.Table(
    "vault_verifications", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("records", sa.BigInteger, nullable=False),  # leaves checked
    sa.Column("sealed", sa.BigInteger, nullable=False),
    sa.Column("checkpoints", sa.Integer, nullable=False),
    sa.Column("signatures_checked", sa.Boolean, nullable=False),
    sa.Column("problem_count", sa.Integer, nullable=False),
    sa.Column("problem", sa.Text, nullable=False),  # the first problem found, "" when ok
    sa.Index("ix_vault_verifications_finished", "finished_at"),
)


# -- more than one collector (issue 9) ---------------------------------------------------------

# Each collector's vault and how far the index holds it: a restarted collector indexes its vault
# from ``indexed_upto + 1`` (a MAX over records would stop short when the last leaves held only
# duplicates or case notes).
vaults = sa.Table(
    "vaults", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(200), nullable=False, server_default=""),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("indexed_upto", sa.BigInteger, nullable=False),
)

# One row: the leader's fencing epoch. Whoever takes the leader lock bumps it; every leader
# transaction checks it under a share lock, so a collector that lost the lead cannot write after.
cluster_leader = sa.Table(
    "cluster_leader", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("holder", sa.String(64)),
    sa.Column("since", sa.Float),
)
