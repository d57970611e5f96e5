"""The README documents every environment variable the settings read."""

import re

from tests.conftest import ROOT


def test_every_setting_from_the_environment_is_in_the_readme():
    settings = (ROOT / "config" / "settings.py").read_text()
    readme = (ROOT / "README.md").read_text()
    names = set(re.findall(r'env_(?:str|int|bool|list)\(\s*"([A-Z_]+)"', settings))
    assert {"DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in readme)
    assert not missing, f"README's configuration table lacks {missing}"


def test_the_readme_gives_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make run") < readme.index("## Roles")
    assert "make test" in readme.split("## Roles")[0]
