"""A real Spark in local mode for the Spark tests: whether it can run here, the
session's warehouse folder (the first engine starts Spark, stopped at the end), an engine
per test, and tables written as Parquet folders.

Tests that use it skip with the reason without pyspark or Java, and fail then when
``REQUIRE_SPARK=1`` (``.ci/run``). A test module imports ``spark_warehouse`` and
``spark_engine`` to have the fixtures ``warehouse`` and ``engine``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from destination.warehouse.spec import SourceSpec, read_spec

COLUMNS = "id int, email string, phone string"


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install -e '.[spark]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return (
            "no Java runtime (java on PATH or JAVA_HOME; apt-get install openjdk-17-jre-headless)"
        )
    return None


def spec_for(warehouse: Path, query: str = "select 1 as id", **extra: Any) -> SourceSpec:
    source = {"url": f"spark://local[2]?warehouse={warehouse}", "query": query, "primary_key": "id"}
    return read_spec({**source, **extra}, mapping="spark.json")


@pytest.fixture(scope="session", name="warehouse")
def spark_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's warehouse folder, with Spark started on it (and stopped at the end)."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("REQUIRE_SPARK") == "1":
            pytest.fail(f"REQUIRE_SPARK=1 but {reason}")
        pytest.skip(f"no Spark: {reason}")
    from destination.warehouse.spark import SparkEngine  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("spark-warehouse")
    starter = SparkEngine(spec_for(folder))  # the first engine starts Spark...
    yield folder
    starter.close()  # ...and stops it


@pytest.fixture(name="engine")
def spark_engine(warehouse: Path) -> Iterator[Any]:
    from destination.warehouse.spark import SparkEngine  # noqa: PLC0415

    opened = SparkEngine(spec_for(warehouse))
    yield opened
    opened.close()


def write_table(folder: Path, rows: list[tuple[Any, ...]]) -> None:
    """Rows of ``COLUMNS`` as the Parquet files of ``folder`` (a table of the warehouse)."""
    from pyspark.sql import SparkSession  # noqa: PLC0415

    spark = SparkSession.builder.getOrCreate()  # the running one
    spark.createDataFrame(rows, COLUMNS).coalesce(1).write.mode("overwrite").parquet(str(folder))
