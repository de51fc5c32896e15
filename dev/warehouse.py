"""A deterministic synthetic copy of GitLab's marketing-contact model, seeded into fakesnow or Snowflake.

Rows are derived from their row number alone, so the same call always builds the same data; emails are
``user<N>@example.com``. Only the model's created date follows today, so the shipped source SQL
("created in the last two months") keeps selecting every row; that column is not mapped, so row hashes
do not move from one day to the next.
"""

from __future__ import annotations

from typing import Any

MODEL_SCHEMA = "SENSITIVE"
MODEL_TABLE = f"{MODEL_SCHEMA}.POC_PUMP_MARKETING_CONTACT_NAMESPACE_DETAIL"
DEFAULT_ROWS = 10_000
MAX_ROWS = 1_000_000

COLUMNS = """(
  EMAIL_ADDRESS VARCHAR, GITLAB_DOTCOM_USER_ID NUMBER(38,0), GITLAB_DOTCOM_CREATED_DATE TIMESTAMP_NTZ,
  GITLAB_DOTCOM_LAST_LOGIN_DATE TIMESTAMP_NTZ, GITLAB_DOTCOM_ACTIVE_STATE VARCHAR,
  ACTIVE_STAGE_COUNT NUMBER(38,0), CREATED_AT TIMESTAMP_NTZ, CREATOR_USER_ID NUMBER(38,0),
  CURRENT_MEMBER_COUNT NUMBER(38,0), GITLAB_PLAN_IS_PAID BOOLEAN, GITLAB_PLAN_TITLE VARCHAR,
  GLM_CONTENT VARCHAR, GLM_SOURCE VARCHAR, IS_ACTIVE_TRIAL BOOLEAN, IS_IMPACTED_BY_USER_LIMIT BOOLEAN,
  IS_NAMESPACE_PQL BOOLEAN, IS_SETUP_FOR_COMPANY BOOLEAN, LIST_OF_STAGES VARCHAR, NAMESPACE_ID NUMBER(38,0),
  TRIAL_START_DATE TIMESTAMP_NTZ, USER_ACCESS_LEVEL NUMBER(38,0), USER_ACCESS_LEVEL_NAME VARCHAR,
  USER_ID NUMBER(38,0), NAMESPACES_ARRAY VARIANT)"""

# Every value is arithmetic on the row number I: deterministic, and no OBJECT_CONSTRUCT (its key
# order drifts under fakesnow). The nested namespaces are JSON text parsed once.
_ROW = """
  'user' || I || '@example.com',
  I,
  DATEADD(DAY, -(I % 50), CURRENT_DATE())::TIMESTAMP_NTZ,
  DATEADD(HOUR, I % 720, '2025-06-01'::TIMESTAMP_NTZ),
  IFF(I % 17 = 0, 'blocked', 'active'),
  I % 10,
  DATEADD(MINUTE, I % 525600, '2025-01-01'::TIMESTAMP_NTZ),
  I,
  1 + I % 25,
  I % 7 = 0,
  CASE I % 4 WHEN 0 THEN 'Free' WHEN 1 THEN 'Ultimate Trial' WHEN 2 THEN 'Premium' ELSE 'Ultimate' END,
  IFF(I % 11 = 0, NULL, 'content-' || (I % 13)),
  CASE I % 3 WHEN 0 THEN 'about.gitlab.com' WHEN 1 THEN 'docs.gitlab.com' ELSE NULL END,
  I % 4 = 1,
  I % 9 = 0,
  I % 5 = 0,
  I % 2 = 0,
  CASE I % 3 WHEN 0 THEN 'create' WHEN 1 THEN 'create,plan' ELSE 'create,plan,verify' END,
  1000000 + I,
  IFF(I % 4 = 1, DATEADD(DAY, I % 60, '2025-03-01'::TIMESTAMP_NTZ), NULL),
  IFF(I % 3 = 0, 30, 50),
  IFF(I % 3 = 0, 'Developer', 'Owner'),
  I,
  PARSE_JSON('[{"NAMESPACE_ID":' || (1000000 + I) || ',"GITLAB_PLAN_TITLE":"'
    || CASE I % 4 WHEN 0 THEN 'Free' WHEN 1 THEN 'Ultimate Trial' WHEN 2 THEN 'Premium' ELSE 'Ultimate' END
    || '","IS_SETUP_FOR_COMPANY":' || IFF(I % 2 = 0, 'true', 'false') || ',"CURRENT_MEMBER_COUNT":'
    || (1 + I % 25) || '}]')"""


def _run(conn: Any, *statements: str) -> int:
    cur = conn.cursor()
    try:
        count = 0
        for sql in statements:
            cur.execute(sql)
            count = cur.rowcount or 0
        return max(count, 0)
    finally:
        cur.close()


def seed_model(conn: Any, rows: int = DEFAULT_ROWS, *, table: str = MODEL_TABLE) -> int:
    """(Re)create the model with ``rows`` synthetic contacts (row numbers 0..rows-1); returns ``rows``."""
    if not 0 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be 0..{MAX_ROWS}")
    schema = table.rsplit(".", 1)[0] if "." in table else None
    if schema:
        _run(conn, f"CREATE SCHEMA IF NOT EXISTS {schema}")
    _run(conn, f"CREATE OR REPLACE TABLE {table} {COLUMNS}")
    if rows:
        add_rows(conn, rows, start=0, table=table)
    return rows


def add_rows(conn: Any, count: int, *, start: int, table: str = MODEL_TABLE) -> int:
    """Append ``count`` contacts numbered from ``start`` with INSERT ... SELECT ... GENERATOR."""
    sql = f"""INSERT INTO {table} SELECT {_ROW}
        FROM (SELECT SEQ4() + {int(start)} AS I FROM TABLE(GENERATOR(ROWCOUNT => {int(count)})))"""
    _run(conn, sql)
    return count


def _picked(fraction: float, seed: int) -> str:
    """A deterministic predicate choosing ``fraction`` of row numbers (exact on multiples of 10,000)."""
    if not 0 <= fraction <= 1:
        raise ValueError("fraction must be within 0..1")
    # 7919 is prime and coprime with 10,000, so I -> (I*7919 + seed) % 10,000 spreads rows evenly.
    return f"MOD(GITLAB_DOTCOM_USER_ID * 7919 + {int(seed)}, 10000) < {round(fraction * 10000)}"


def mutate(conn: Any, fraction: float, seed: int = 0, *, table: str = MODEL_TABLE) -> int:
    """Change mapped columns of a deterministic ``fraction`` of rows; returns how many rows changed."""
    return _run(
        conn,
        f"""UPDATE {table} SET CURRENT_MEMBER_COUNT = CURRENT_MEMBER_COUNT + 1,
            GLM_SOURCE = 'mutated-{int(seed)}' WHERE {_picked(fraction, seed)}""",
    )


def remove_rows(conn: Any, fraction: float, seed: int = 0, *, table: str = MODEL_TABLE) -> int:
    """Delete a deterministic ``fraction`` of rows; returns how many were deleted."""
    return _run(conn, f"DELETE FROM {table} WHERE {_picked(fraction, seed)}")


def picked_emails(conn: Any, fraction: float, seed: int = 0, *, table: str = MODEL_TABLE) -> set[str]:
    """The emails ``mutate``/``remove_rows`` with the same arguments would touch (for tests)."""
    cur = conn.cursor()
    try:
        cur.execute(f"SELECT EMAIL_ADDRESS FROM {table} WHERE {_picked(fraction, seed)}")
        return {row[0] for row in cur.fetchall()}
    finally:
        cur.close()
