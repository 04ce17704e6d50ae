"""Bring your own logs: CSV, Parquet or event-line files + an import schema YAML -> a ctl dataset.

Example::

    from ctl.data.importer import import_dataset, load_spec, read_id_map

    spec = load_spec("my_schema.yaml")
    report = import_dataset(spec, ["clicks_2024.csv", "clicks_2025.parquet"], "datasets/mylogs")
    raw_users = read_id_map(report.path, "user_id")   # raw_users[id] is the raw user of that id

``ctl data import`` (:func:`ctl.data.import_run.run_import`) and data presets with an ``importer:`` node
(:func:`import_preset`, called by the registry) wrap the same function. ``docs/data.md`` lists
every key of the schema YAML.
"""

from ctl.data.id_maps import ID_MAPS_DIR, read_id_map
from ctl.data.importer.config import import_key, import_preset, public_data_root, schema_from
from ctl.data.importer.convert import ORIGIN_FILE, ImportReport, import_dataset
from ctl.data.importer.errors import InputError, SpecError
from ctl.data.importer.spec import ImportSpec, load_spec, parse_spec

__all__ = [
    "ID_MAPS_DIR",
    "ORIGIN_FILE",
    "ImportReport",
    "ImportSpec",
    "InputError",
    "SpecError",
    "import_dataset",
    "import_key",
    "import_preset",
    "load_spec",
    "parse_spec",
    "public_data_root",
    "read_id_map",
    "schema_from",
]
