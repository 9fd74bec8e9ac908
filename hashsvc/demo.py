"""`make run`: the main job on the embedded default (SQLite + the demo list in index/).

On first run it creates `index/hashsvc.db` with the list `demo-known` (action block)
imported from `index/demo-list.csv` (hashes of benign photos from Meta's PDQ test
data) and builds the search index. Every run then creates a demo API key, prints it
with a curl example, and serves the API on 127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hashsvc.config import Settings
from hashsvc.hashlist import parse_list
from hashsvc.index_sync import IndexSet
from hashsvc.store import Store

DEMO_LIST = "demo-known"
DEMO_FILE = "demo-list.csv"


def ensure_demo_data(settings: Settings) -> bool:
    """Create the demo list from `<data_dir>/demo-list.csv` if the store has no lists.

    Returns True when it created something. An existing store is left as it is.
    """
    source = Path(settings.data_dir) / DEMO_FILE
    with Store.open(settings.db_path) as store:
        if store.lists():
            return False
        parsed = parse_list(source.read_bytes(), "csv", source_name=str(source))
        parsed.raise_if_invalid()
        store.create_list(
            DEMO_LIST,
            "block",
            description="Demo list: hashes of benign test photos. Never real data.",
        )
        store.import_entries(
            DEMO_LIST, parsed.entries, source_name=DEMO_FILE, file_sha256=parsed.sha256
        )
        IndexSet.open(store, settings.data_dir, settings.index_inline_max_bytes).save()
        return True


def create_demo_key(settings: Settings) -> str:
    """A fresh key with every scope, for trying the API; earlier demo keys are revoked
    (their tokens were printed once and are not kept, so they cannot be shown again)."""
    import secrets
    import time

    from hashsvc import keys

    with Store.open(settings.db_path) as store:
        for old in keys.list_keys(store, include_revoked=False):
            if old.name.startswith("demo-"):
                keys.revoke_key(store, old.name)
        name = time.strftime("demo-%Y%m%d-%H%M%S")
        _, token = keys.create_key(store, f"{name}-{secrets.token_hex(2)}", "match,review,admin")
    return token


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = Settings.from_env(data_dir=args.data_dir, host="127.0.0.1", port=8000)
    if ensure_demo_data(settings):
        print(f"created the demo list {DEMO_LIST!r} in {settings.db_path}")
    token = create_demo_key(settings)
    photo = Path(__file__).resolve().parents[2] / "shared/testdata/pdq/bridge-mods/aaa-orig.jpg"
    base = f"http://{settings.host}:{settings.port}"
    print(
        "\nDemo API key (scopes match, review, admin; shown once):\n\n"
        f"    export HASHSVC_KEY={token}\n\n"
        "Then, in another shell:\n\n"
        f'    curl -s -H "Authorization: Bearer $HASHSVC_KEY" -H "Content-Type: image/jpeg" \\\n'
        f"         --data-binary @{photo} {base}/v1/match\n",
        flush=True,
    )
    from hashsvc.cli.serve import run

    run(settings)


if __name__ == "__main__":
    main()
