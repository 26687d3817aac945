"""The list at catalogue scale (issue 13): a ranked search index in list order, and the
filters' indexes with the list's sort key.

- Filters: `type`, `status` and `category` indexes become (column, created_at, id), so that a
  filtered page and the walk to a deep page read one index in the list's order.
- Search: every plugin gets a search key `k` (an increasing integer, in registration order:
  existing plugins numbered in list order) that the search index returns its matches in.
  SQLite: FTS5 trigram tables `plugins_search` (name, description) and `plugins_search_name`
  (name) whose rowid is `k`, and `plugins_search_keys` (k, plugin_id), kept by triggers that
  find a plugin's rows by `k` (the former `plugins_fts` found them by an UNINDEXED plugin id:
  a scan of the index per delete). Each text is stored followed by two U+0001 characters,
  which no search term may contain: every character of a text, its last one included, then
  starts an indexed trigram, so that a 1- or 2-character term is found through the trigrams
  it starts (storage/listing.py). PostgreSQL: a narrow table `plugins_search` (k, plugin_id,
  the lower-cased name and description) with pg_trgm GIN indexes on each column and a GIN
  index of each column's 2-character sequences (`mlx_search_bigrams`), kept by a trigger
  (deleted with its plugin by the foreign key). Both are filled from the stored plugins.
- The list's version: `plugin_list_version` (one row: a random epoch, a counter) is bumped in
  the transaction of every change a list can show (a plugin added or deleted, its name,
  description, type, status or category changed), so that a count or a deep page's first
  row found once can be reused exactly until then (storage/listing.py `Memo`). PostgreSQL
  bumps it at commit (a deferred trigger, once per transaction): the counter row is the
  last lock a transaction takes, so two writers never deadlock on it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_FILTERS = ("type", "status", "category")

# SQLite ---------------------------------------------------------------------------------

_PAD = "char(1, 1)"  # appended to each indexed text (see the module docstring)
_KEY_OF_OLD = "(SELECT k FROM plugins_search_keys WHERE plugin_id = old.id)"
_KEY_OF_NEW = "(SELECT k FROM plugins_search_keys WHERE plugin_id = new.id)"

_VERSION_TABLE = (
    "CREATE TABLE plugin_list_version ("
    "id INTEGER PRIMARY KEY, epoch VARCHAR(32) NOT NULL, n BIGINT NOT NULL)"
)
_BUMP = "UPDATE plugin_list_version SET n = n + 1 WHERE id = 1"

_SQLITE_UP = (
    _VERSION_TABLE,
    "INSERT INTO plugin_list_version (id, epoch, n) VALUES (1, lower(hex(randomblob(16))), 0)",
    f"CREATE TRIGGER plugin_list_version_ai AFTER INSERT ON plugins BEGIN {_BUMP}; END",
    f"CREATE TRIGGER plugin_list_version_ad AFTER DELETE ON plugins BEGIN {_BUMP}; END",
    "CREATE TRIGGER plugin_list_version_au "
    f"AFTER UPDATE OF name, description, type, status, category ON plugins BEGIN {_BUMP}; END",
    "DROP TRIGGER IF EXISTS plugins_fts_ai",
    "DROP TRIGGER IF EXISTS plugins_fts_ad",
    "DROP TRIGGER IF EXISTS plugins_fts_au",
    "DROP TABLE IF EXISTS plugins_fts",
    "CREATE TABLE plugins_search_keys ("
    "k INTEGER PRIMARY KEY AUTOINCREMENT, plugin_id VARCHAR(160) NOT NULL UNIQUE)",
    "CREATE VIRTUAL TABLE plugins_search USING fts5(name, description, tokenize='trigram')",
    "CREATE VIRTUAL TABLE plugins_search_name USING fts5(name, tokenize='trigram')",
    # their trigrams (a term range of them is what a 1-2 character term is looked up by)
    "CREATE VIRTUAL TABLE plugins_search_terms USING fts5vocab(plugins_search, row)",
    "CREATE VIRTUAL TABLE plugins_search_name_terms USING fts5vocab(plugins_search_name, row)",
    "INSERT INTO plugins_search_keys (plugin_id) SELECT id FROM plugins ORDER BY created_at, id",
    "INSERT INTO plugins_search (rowid, name, description) "
    f"SELECT k, name || {_PAD}, description || {_PAD} "
    "FROM plugins_search_keys JOIN plugins ON plugins.id = plugins_search_keys.plugin_id",
    "INSERT INTO plugins_search_name (rowid, name) "
    f"SELECT k, name || {_PAD} "
    "FROM plugins_search_keys JOIN plugins ON plugins.id = plugins_search_keys.plugin_id",
    # one segment each: what the triggers add later is merged by FTS5's automerge
    "INSERT INTO plugins_search (plugins_search) VALUES ('optimize')",
    "INSERT INTO plugins_search_name (plugins_search_name) VALUES ('optimize')",
    "CREATE TRIGGER plugins_search_ai AFTER INSERT ON plugins BEGIN "
    "INSERT INTO plugins_search_keys (plugin_id) VALUES (new.id); "
    "INSERT INTO plugins_search (rowid, name, description) "
    f"VALUES ({_KEY_OF_NEW}, new.name || {_PAD}, new.description || {_PAD}); "
    f"INSERT INTO plugins_search_name (rowid, name) VALUES ({_KEY_OF_NEW}, new.name || {_PAD}); "
    "END",
    "CREATE TRIGGER plugins_search_ad AFTER DELETE ON plugins BEGIN "
    f"DELETE FROM plugins_search WHERE rowid = {_KEY_OF_OLD}; "
    f"DELETE FROM plugins_search_name WHERE rowid = {_KEY_OF_OLD}; "
    "DELETE FROM plugins_search_keys WHERE plugin_id = old.id; "
    "END",
    "CREATE TRIGGER plugins_search_au AFTER UPDATE OF name, description ON plugins BEGIN "
    f"UPDATE plugins_search SET name = new.name || {_PAD}, "
    f"description = new.description || {_PAD} WHERE rowid = {_KEY_OF_OLD}; "
    f"UPDATE plugins_search_name SET name = new.name || {_PAD} WHERE rowid = {_KEY_OF_OLD}; "
    "END",
)

_SQLITE_DOWN = (
    "DROP TRIGGER IF EXISTS plugin_list_version_ai",
    "DROP TRIGGER IF EXISTS plugin_list_version_ad",
    "DROP TRIGGER IF EXISTS plugin_list_version_au",
    "DROP TABLE IF EXISTS plugin_list_version",
    "DROP TRIGGER IF EXISTS plugins_search_ai",
    "DROP TRIGGER IF EXISTS plugins_search_ad",
    "DROP TRIGGER IF EXISTS plugins_search_au",
    "DROP TABLE IF EXISTS plugins_search_terms",
    "DROP TABLE IF EXISTS plugins_search_name_terms",
    "DROP TABLE IF EXISTS plugins_search",
    "DROP TABLE IF EXISTS plugins_search_name",
    "DROP TABLE IF EXISTS plugins_search_keys",
    # 0001's index, refilled
    "CREATE VIRTUAL TABLE plugins_fts USING fts5("
    "plugin_id UNINDEXED, name, description, tokenize='trigram')",
    "INSERT INTO plugins_fts (plugin_id, name, description) "
    "SELECT id, name, description FROM plugins",
    "CREATE TRIGGER plugins_fts_ai AFTER INSERT ON plugins BEGIN "
    "INSERT INTO plugins_fts(plugin_id, name, description) "
    "VALUES (new.id, new.name, new.description); END",
    "CREATE TRIGGER plugins_fts_ad AFTER DELETE ON plugins BEGIN "
    "DELETE FROM plugins_fts WHERE plugin_id = old.id; END",
    "CREATE TRIGGER plugins_fts_au AFTER UPDATE OF name, description ON plugins BEGIN "
    "UPDATE plugins_fts SET name = new.name, description = new.description "
    "WHERE plugin_id = old.id; END",
)

# PostgreSQL -----------------------------------------------------------------------------

_PG_UP = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "DROP INDEX IF EXISTS ix_plugins_search",
    # The 2-character sequences of each text, marked by column (n: name, d: description):
    # a 1-2 character search is exact through them, where pg_trgm cannot index a term
    # shorter than a trigram. Conditions on it are only ever read from its index (~50 us a
    # row to compute: storage/listing.py reads them in a materialized CTE).
    "CREATE FUNCTION mlx_search_bigrams(name text, description text) RETURNS text[] "
    "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ "
    "SELECT ARRAY(SELECT 'n' || substr(name, i, 2) FROM generate_series(1, length(name) - 1) i "
    "UNION ALL "
    "SELECT 'd' || substr(description, i, 2) FROM generate_series(1, length(description) - 1) i)"
    " $$",
    "CREATE TABLE plugins_search ("
    "k BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "plugin_id VARCHAR(160) NOT NULL UNIQUE REFERENCES plugins (id) ON DELETE CASCADE, "
    "name TEXT NOT NULL, description TEXT NOT NULL) "
    # its queries are a few milliseconds: starting parallel workers costs more than it saves
    "WITH (parallel_workers = 0)",
    "INSERT INTO plugins_search (plugin_id, name, description) "
    "SELECT id, lower(name), lower(description) FROM plugins ORDER BY created_at, id",
    "CREATE INDEX ix_plugins_search_name ON plugins_search USING gin (name gin_trgm_ops)",
    "CREATE INDEX ix_plugins_search_description ON plugins_search "
    "USING gin (description gin_trgm_ops)",
    "CREATE INDEX ix_plugins_search_bigrams ON plugins_search "
    "USING gin (mlx_search_bigrams(name, description))",
    # Inserts: one statement-level trigger (a bulk insert adds its rows in one statement, in
    # list order). Name or description changes: per row, only when one of them changed.
    "CREATE FUNCTION mlx_plugins_search_insert() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN "
    "INSERT INTO plugins_search (plugin_id, name, description) "
    "SELECT id, lower(name), lower(description) FROM new_plugins ORDER BY created_at, id; "
    "RETURN NULL; "
    "END $$",
    "CREATE TRIGGER plugins_search_insert AFTER INSERT ON plugins "
    "REFERENCING NEW TABLE AS new_plugins "
    "FOR EACH STATEMENT EXECUTE FUNCTION mlx_plugins_search_insert()",
    "CREATE FUNCTION mlx_plugins_search_update() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN "
    "UPDATE plugins_search SET name = lower(NEW.name), description = lower(NEW.description) "
    "WHERE plugin_id = NEW.id; "
    "RETURN NULL; "
    "END $$",
    "CREATE TRIGGER plugins_search_update AFTER UPDATE OF name, description ON plugins "
    "FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name "
    "OR OLD.description IS DISTINCT FROM NEW.description) "
    "EXECUTE FUNCTION mlx_plugins_search_update()",
    # statistics now, for the planner's choice between an index and a walk in key order
    "ANALYZE plugins_search",
    _VERSION_TABLE,
    "INSERT INTO plugin_list_version (id, epoch, n) "
    "VALUES (1, md5(random()::text || clock_timestamp()::text), 0)",
    "CREATE FUNCTION mlx_plugin_list_changed() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN "
    "IF current_setting('mlx.plugin_list_changed', true) IS DISTINCT FROM 'yes' THEN "
    f"{_BUMP}; "
    "PERFORM set_config('mlx.plugin_list_changed', 'yes', true); "
    "END IF; "
    "RETURN NULL; "
    "END $$",
    "CREATE CONSTRAINT TRIGGER plugin_list_changed "
    "AFTER INSERT OR DELETE OR UPDATE OF name, description, type, status, category ON plugins "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION mlx_plugin_list_changed()",
)

_PG_DOWN = (
    "DROP TRIGGER IF EXISTS plugin_list_changed ON plugins",
    "DROP FUNCTION IF EXISTS mlx_plugin_list_changed()",
    "DROP TABLE IF EXISTS plugin_list_version",
    "DROP TRIGGER IF EXISTS plugins_search_update ON plugins",
    "DROP TRIGGER IF EXISTS plugins_search_insert ON plugins",
    "DROP FUNCTION IF EXISTS mlx_plugins_search_update()",
    "DROP FUNCTION IF EXISTS mlx_plugins_search_insert()",
    "DROP TABLE IF EXISTS plugins_search",
    "DROP FUNCTION IF EXISTS mlx_search_bigrams(text, text)",
    "CREATE INDEX ix_plugins_search ON plugins USING gin "
    "((lower(name || ' ' || description)) gin_trgm_ops)",
)


def upgrade() -> None:
    for column in _FILTERS:
        op.drop_index(f"ix_plugins_{column}", "plugins")
        op.create_index(f"ix_plugins_{column}_order", "plugins", [column, "created_at", "id"])
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": _SQLITE_UP, "postgresql": _PG_UP}.get(dialect, ()):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": _SQLITE_DOWN, "postgresql": _PG_DOWN}.get(dialect, ()):
        op.execute(statement)
    for column in _FILTERS:
        op.drop_index(f"ix_plugins_{column}_order", "plugins")
        op.create_index(f"ix_plugins_{column}", "plugins", [column])
