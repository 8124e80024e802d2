"""Engineer profiles and the contractor-list import, on a real database, and their CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cloud import auth
from cloud.auth import PasswordHasher, authenticate, create_user, issue_token
from cloud.cli import app
from cloud.db import make_engine, session_factory, transaction
from cloud.domain import Role
from cloud.errors import Conflict, InvalidInput, NotFound
from cloud.models import Engineer, EngineerPrice, Token, User
from cloud.service import engineers
from cloud.service.engineer_csv import MAX_BYTES, RowError, parse_csv
from cloud.service.engineer_import import ImportReport, import_engineers
from cloud.service.engineers import (
    EngineerSpec,
    engineer_json,
    load_engineer,
    upsert_engineer,
)

T0 = 1_790_000_000_000
SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "engineers.sample.csv"
FAST = PasswordHasher(n=1 << 4)
"""A cheap hasher: these tests are about profiles, not scrypt's cost."""

ALICE = {
    "id": "alice.eng",
    "name": "Alice Smith",
    "gas_safe_number": "1234567",
    "skills": "gas_safe;boiler_repair",
    "languages": "en",
    "training": "acs_ccn1",
    "home_lat": "53.48",
    "home_lon": "-2.24",
    "invitations": "10",
    "accepted": "7",
    "evaluated": "4",
    "cs_sum": "17",
    "sq_sum": "15",
    "price_repair": "90",
}
"""A valid row: AR 7/10, CS 17/4, SQ 15/4."""
COLUMNS = list(ALICE)


def row(**changes: str) -> dict[str, str]:
    """Alice's row with some cells changed."""
    return ALICE | changes


def csv_text(*rows: dict[str, str], columns: list[str] = COLUMNS) -> str:
    lines = [",".join(columns)]
    lines += [",".join(r.get(c, "") for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


def spec(**changes: object) -> EngineerSpec:
    fields: dict[str, object] = {
        "user_id": "bob.eng",
        "display_name": "Bob Jones",
        "gas_safe_number": "7654321",
        "skills": frozenset({"gas_safe", "boiler_repair"}),
        "languages": frozenset({"en"}),
        "training": frozenset(),
        "home_lat": 53.5,
        "home_lon": -2.2,
    }
    return EngineerSpec(**(fields | changes))  # type: ignore[arg-type]


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield session_factory(engine)
    engine.dispose()


def profile(sessions: sessionmaker[Session], user_id: str) -> dict[str, object]:
    with sessions() as session:
        user = session.get(User, user_id)
        assert user is not None
        return engineer_json(*load_engineer(session, user_id), display_name=user.display_name)


# --- Import, on both databases --------------------------------------------------------------


def test_sample_file_imports(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        report = import_engineers(session, SAMPLE.read_bytes(), now_ms=T0)
    assert report.rejected == ()
    assert len(report.imported) == 6 and report.imported[0] == "j.okafor"
    hughes = profile(sessions, "r.hughes")
    assert hughes["display_name"] == "Rhys Hughes" and hughes["languages"] == ["cy", "en"]
    assert hughes["figures"] == {"ar": 0.9, "ar_pct": 90.0, "cs": 4.7, "sq": 4.41}
    assert hughes["prices"] == {
        "annual_check": {"average": 62.0, "jobs": 15},
        "repair": {"average": 80.0, "jobs": 35},
    }
    cold = profile(sessions, "m.nowak")
    assert cold["history"] == {
        "invitations": 0,
        "accepted": 0,
        "evaluated": 0,
        "cs_sum": 0.0,
        "sq_sum": 0.0,
    }
    assert cold["figures"] == {"ar": 0.0, "ar_pct": 0.0, "cs": 0.0, "sq": 0.0}
    assert cold["prices"] == {} and cold["available"] is True
    with sessions() as session:
        user = session.get(User, "m.nowak")
        assert user is not None and user.role == "engineer" and not user.disabled
        # Imported accounts exist but cannot log in until an admin sets a password.
        assert user.password_hash == engineers.UNUSABLE_PASSWORD
        assert authenticate(session, "m.nowak", engineers.UNUSABLE_PASSWORD) is None


def test_engineer_json_figures_by_hand(sessions: sessionmaker[Session]) -> None:
    # AR = 7/10 = 0.7; CS = 17/4 = 4.25; SQ = 15/4 = 3.75; jobs behind the price default
    # to max(1, evaluated) = 4.
    with transaction(sessions) as session:
        report = import_engineers(session, csv_text(ALICE), now_ms=T0)
    assert report == ImportReport(("alice.eng",), ())
    assert profile(sessions, "alice.eng") == {
        "id": "alice.eng",
        "display_name": "Alice Smith",
        "gas_safe_number": "1234567",
        "skills": ["boiler_repair", "gas_safe"],
        "languages": ["en"],
        "training": ["acs_ccn1"],
        "home": {"lat": 53.48, "lon": -2.24},
        "available": True,
        "history": {
            "invitations": 10,
            "accepted": 7,
            "evaluated": 4,
            "cs_sum": 17.0,
            "sq_sum": 15.0,
        },
        "figures": {"ar": 0.7, "ar_pct": 70.0, "cs": 4.25, "sq": 3.75},
        "prices": {"repair": {"average": 90.0, "jobs": 4}},
    }


def bad_file() -> str:
    """Good rows on lines 2 and 6, one bad row for most rules in between and after."""
    return csv_text(
        ALICE,  # 2
        row(id="b.bad", gas_safe_number="12345"),  # 3
        row(id="c.bad", accepted="11"),  # 4
        row(id="alice.eng"),  # 5: duplicate of line 2
        row(id="e.good", name="Eve Good"),  # 6
        row(id="f.bad", home_lat="91", invitations="x"),  # 7: malformed cells come first
        {"id": "g.bad"},  # 8: every malformed cell is reported
    )


def test_all_or_nothing_by_default(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        report = import_engineers(session, bad_file(), now_ms=T0)
    assert report.imported == ()
    assert [(e.line, e.user_id, e.field) for e in report.rejected] == [
        (3, "b.bad", "gas_safe_number"),
        (4, "c.bad", "accepted"),
        (5, "alice.eng", "id"),
        (7, "f.bad", "invitations"),
        (8, "g.bad", "home_lat"),
        (8, "g.bad", "home_lon"),
    ]
    assert "first on line 2" in report.rejected[2].message
    with sessions() as session:
        assert session.scalars(select(Engineer)).all() == []
        assert session.scalars(select(User)).all() == []


def test_skip_invalid_imports_the_good_rows(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        report = import_engineers(session, bad_file(), now_ms=T0, skip_invalid=True)
    assert report.imported == ("alice.eng", "e.good")
    assert {e.line for e in report.rejected} == {3, 4, 5, 7, 8}
    with sessions() as session:
        assert sorted(session.scalars(select(Engineer.user_id))) == ["alice.eng", "e.good"]
    # The duplicate on line 5 did not overwrite line 2's Alice.
    assert profile(sessions, "alice.eng")["display_name"] == "Alice Smith"


def test_reimport_is_idempotent_and_updates_figures(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        import_engineers(session, SAMPLE.read_bytes(), now_ms=T0)
    before = profile(sessions, "j.okafor")
    with transaction(sessions) as session:
        again = import_engineers(session, SAMPLE.read_bytes(), now_ms=T0 + 1)
    assert len(again.imported) == 6 and profile(sessions, "j.okafor") == before
    with sessions() as session:
        assert len(session.scalars(select(Engineer)).all()) == 6
        okafor = session.get(Engineer, "j.okafor")
        assert okafor is not None and (okafor.created_ms, okafor.updated_ms) == (T0, T0 + 1)
    # Alice gains history and loses her repair price; her name changes.
    with transaction(sessions) as session:
        import_engineers(session, csv_text(ALICE), now_ms=T0)
    newer = row(name="Alice Smith-Jones", invitations="20", accepted="15", evaluated="5")
    newer |= {"cs_sum": "22", "sq_sum": "20", "price_repair": ""}
    with transaction(sessions) as session:
        import_engineers(session, csv_text(newer), now_ms=T0 + 2)
    alice = profile(sessions, "alice.eng")
    assert alice["display_name"] == "Alice Smith-Jones"
    assert alice["figures"] == {"ar": 0.75, "ar_pct": 75.0, "cs": 4.4, "sq": 4.0}
    assert alice["prices"] == {}
    with sessions() as session:
        assert session.scalars(select(EngineerPrice)).all() != []  # the sample's are kept
        assert session.get(EngineerPrice, ("alice.eng", "repair")) is None


def test_user_with_another_role(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        create_user(session, "alice.eng", "a-long-password", Role.OWNER, now_ms=T0, hasher=FAST)
    with transaction(sessions) as session, pytest.raises(Conflict, match="role owner"):
        upsert_engineer(session, spec(user_id="alice.eng"), now_ms=T0)
    with transaction(sessions) as session:
        report = import_engineers(session, csv_text(ALICE, row(id="e.good")), now_ms=T0)
    assert report.imported == ()
    assert report.rejected == (
        RowError(2, "alice.eng", "id", "user alice.eng exists with role owner, not engineer"),
    )
    with transaction(sessions) as session:
        report = import_engineers(
            session, csv_text(ALICE, row(id="e.good")), now_ms=T0, skip_invalid=True
        )
    assert report.imported == ("e.good",)
    with sessions() as session:
        assert session.get(Engineer, "alice.eng") is None
        owner = session.get(User, "alice.eng")
        assert owner is not None and owner.role == "owner"


def test_upsert_and_passwords(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        upsert_engineer(session, spec(), now_ms=T0, password="bob-password", hasher=FAST)
        upsert_engineer(session, spec(user_id="carol.eng"), now_ms=T0)
    with sessions() as session:
        assert authenticate(session, "bob.eng", "bob-password") is not None
        assert authenticate(session, "carol.eng", "") is None
    # Upserting again never changes an existing user's password (no account take-over).
    with transaction(sessions) as session:
        upsert_engineer(
            session,
            spec(evaluated=2, cs_sum=9.0, sq_sum=8.0, prices={"repair": 80.0}),
            now_ms=T0 + 1,
            password="someone-elses",
            hasher=FAST,
        )
        bob = session.get(User, "bob.eng")
        assert bob is not None
        issue_token(session, bob, now_ms=T0, ttl_ms=60_000)
    with sessions() as session:
        assert authenticate(session, "bob.eng", "bob-password") is not None
        _, prices = load_engineer(session, "bob.eng")
        assert [(p.service_type, p.average, p.jobs) for p in prices] == [("repair", 80.0, 2)]
    with transaction(sessions) as session:
        auth.set_password(session, "bob.eng", "a-new-password", hasher=FAST)
    with sessions() as session:
        assert authenticate(session, "bob.eng", "a-new-password") is not None
        assert session.scalars(select(Token)).all() == []  # old sessions ended
    with transaction(sessions) as session, pytest.raises(InvalidInput):
        auth.set_password(session, "bob.eng", "short", hasher=FAST)
    with transaction(sessions) as session, pytest.raises(NotFound):
        auth.set_password(session, "nobody", "a-long-password", hasher=FAST)
    with transaction(sessions) as session, pytest.raises(InvalidInput, match="at least"):
        upsert_engineer(session, spec(user_id="dan.eng"), now_ms=T0, password="short")
    with sessions() as session, pytest.raises(NotFound):
        load_engineer(session, "dan.eng")


def test_keep_history(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        import_engineers(session, csv_text(ALICE), now_ms=T0)
    with transaction(sessions) as session:
        fresh = spec(user_id="alice.eng", skills=frozenset({"hydraulics"}))
        kept = engineers.keep_history(session, fresh)
        upsert_engineer(session, kept, now_ms=T0 + 1)
        assert engineers.keep_history(session, spec()) == spec()
    alice = profile(sessions, "alice.eng")
    assert alice["skills"] == ["hydraulics"]
    assert alice["figures"] == {"ar": 0.7, "ar_pct": 70.0, "cs": 4.25, "sq": 3.75}
    assert alice["prices"] == {"repair": {"average": 90.0, "jobs": 4}}


# --- Row validation (pure) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"id": "Alice Smith"}, "id", "3-64 characters"),
        ({"id": ""}, "id", "3-64 characters"),
        ({"name": "x" * 201}, "name", "at most 200"),
        ({"gas_safe_number": "12345"}, "gas_safe_number", "6-7 digits"),
        ({"gas_safe_number": "12345678"}, "gas_safe_number", "6-7 digits"),
        ({"gas_safe_number": "12a4567"}, "gas_safe_number", "6-7 digits"),
        ({"gas_safe_number": ""}, "gas_safe_number", "6-7 digits"),
        ({"skills": ""}, "skills", "at least one"),
        ({"skills": ";"}, "skills", "at least one"),
        ({"skills": "boiler repair"}, "skills", "not a valid token"),
        ({"skills": "gas;9lives"}, "skills", "not a valid token"),
        ({"languages": "en-gb"}, "languages", "not a valid token"),
        ({"training": "x" * 33}, "training", "not a valid token"),
        ({"home_lat": "91"}, "home_lat", "90 degrees"),
        ({"home_lat": ""}, "home_lat", "required"),
        ({"home_lat": "nan"}, "home_lat", "a number"),
        ({"home_lat": "1e400"}, "home_lat", "90 degrees"),
        ({"home_lon": "-180.5"}, "home_lon", "180 degrees"),
        ({"home_lon": "2,24"}, "row", "has 15 fields"),
        ({"invitations": "-1"}, "invitations", "whole number"),
        ({"invitations": "2.5"}, "invitations", "whole number"),
        ({"invitations": "3000000000"}, "invitations", "whole number"),
        ({"accepted": "11"}, "accepted", "exceeds invitations"),
        ({"evaluated": "four"}, "evaluated", "whole number"),
        ({"cs_sum": "3.9"}, "cs_sum", "between 4 and 20"),
        ({"cs_sum": "20.5"}, "cs_sum", "between 4 and 20"),
        ({"sq_sum": ""}, "sq_sum", "between 4 and 20"),
        ({"evaluated": "0", "cs_sum": "0", "sq_sum": "2"}, "sq_sum", "must be 0"),
        ({"price_repair": "0"}, "price_repair", "positive"),
        ({"price_repair": "-5"}, "price_repair", "positive"),
        ({"price_repair": "£90"}, "price_repair", "a number"),
    ],
)
def test_each_rule_rejects_with_line_and_field(
    changes: dict[str, str], field: str, message: str
) -> None:
    specs, errors = parse_csv(csv_text(row(id="ok.eng"), row(**changes)))
    assert [s.user_id for s in specs] == ["ok.eng"]
    assert [(e.line, e.field) for e in errors] == [(3, field)], errors
    assert message in errors[0].message


def test_cells_are_normalised() -> None:
    text = csv_text(
        row(skills=" Gas_Safe ; BOILER_REPAIR;;", languages="EN;cy", gas_safe_number="123 456")
    )
    [parsed], errors = parse_csv(text)
    assert errors == []
    assert parsed.skills == {"gas_safe", "boiler_repair"} and parsed.languages == {"en", "cy"}
    assert parsed.gas_safe_number == "123456"


def test_price_jobs_columns() -> None:
    columns = [*COLUMNS, "price_jobs_repair", "price_annual_check"]
    specs, errors = parse_csv(
        csv_text(
            row(id="a.eng", price_jobs_repair="12", price_annual_check="60.5"),
            row(id="b.eng", price_jobs_repair="0"),
            row(id="c.eng", price_repair="", price_jobs_repair="3"),
            columns=columns,
        )
    )
    assert [(e.line, e.field, e.message) for e in errors] == [
        (3, "price_jobs_repair", "must be a whole number >= 1, got 0"),
        (4, "price_jobs_repair", "a job count needs an average price"),
    ]
    assert dict(specs[0].prices) == {"repair": 90.0, "annual_check": 60.5}
    assert dict(specs[0].price_jobs) == {"repair": 12, "annual_check": 4}


def test_line_numbers_count_file_lines() -> None:
    # A quoted cell spanning two lines, and blank lines, still give file line numbers.
    text = (
        ",".join(COLUMNS)
        + "\n"
        + ",".join(row(skills='"gas;\nboiler_repair"').values())
        + "\n\n"
        + ",".join(row(id="x.eng", home_lat="95").values())
        + "\r\n"
    )
    specs, errors = parse_csv(text)
    assert specs[0].skills == {"gas", "boiler_repair"}
    assert [(e.line, e.user_id, e.field) for e in errors] == [(5, "x.eng", "home_lat")]
    assert str(errors[0]).startswith("line 5 (id x.eng): home_lat: ")


def test_spec_is_frozen_and_copies_its_prices() -> None:
    prices = {"repair": 80.0}
    made = spec(evaluated=0, prices=prices)
    prices["repair"] = 1.0
    assert made.prices == {"repair": 80.0} and made.price_jobs == {"repair": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.home_lat = 0.0  # type: ignore[misc]
    with pytest.raises(InvalidInput) as caught:
        spec(skills="gas")
    assert caught.value.context["field"] == "skills"
    with pytest.raises(InvalidInput) as caught:
        spec(prices={"Repair": 80.0})
    assert caught.value.context["field"] == "price_Repair"


# --- The file as a whole --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "header row is required"),
        (b"\n\n", "header row is required"),
        ("id,name\nx,\u00e9".encode("latin-1"), "not UTF-8: byte 0xe9 on line 2"),
        (",".join(COLUMNS).encode("utf-16"), "UTF-16"),
        (",".join(COLUMNS).encode("utf-16-le"), "NUL"),
        (b"\n" + ",".join(COLUMNS).encode(), "header must be on line 1"),
        (",".join([*COLUMNS, "rating", "Price_Repair "]).encode(), "unknown columns: rating"),
        (",".join([*COLUMNS, "price_repair"]).encode(), "repeated columns: price_repair"),
        (",".join([*COLUMNS, "price_"]).encode(), "unknown columns: price_"),
        (",".join([*COLUMNS, ""]).encode(), "column(s) 15 have no name"),
        (b"id,name,skills", "missing required columns: gas_safe_number, home_lat, home_lon"),
        (",".join([*COLUMNS, "price_jobs_gas"]).encode(), "price_jobs_gas without a matching"),
        (csv_text(ALICE).encode() + b'x,"unterminated\n', "bad CSV"),
        (b"x" * (MAX_BYTES + 1), "larger than"),
        (("\n".join([",".join(COLUMNS)] + ["a"] * 10_001)).encode(), "more than 10000 rows"),
    ],
)
def test_unusable_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_csv(data)
    assert message in str(caught.value)


def test_bom_and_str_input_are_accepted() -> None:
    specs, errors = parse_csv(b"\xef\xbb\xbf" + csv_text(ALICE).encode())
    assert errors == [] and specs[0].user_id == "alice.eng"
    specs, errors = parse_csv("\ufeff" + csv_text(ALICE))
    assert errors == [] and specs[0].user_id == "alice.eng"
    with pytest.raises(InvalidInput, match="not valid Unicode"):
        parse_csv(csv_text(row(name="\udcff")))


def test_import_refuses_a_bad_file_without_writing(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session, pytest.raises(InvalidInput, match="unknown columns"):
        import_engineers(session, csv_text(ALICE, columns=[*COLUMNS, "notes"]), now_ms=T0)
    with sessions() as session:
        assert session.scalars(select(User)).all() == []


# --- CLI ------------------------------------------------------------------------------------


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_cli_import_exit_codes(db_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(bad_file())
    code, out, err = run("engineers", "import", str(bad), "--db", db_url)
    assert code == 2 and "imported 0 engineers" in out
    assert "line 3 (id b.bad): gas_safe_number: Gas Safe number must be 6-7 digits" in err
    assert "nothing imported (fix them, or use --skip-invalid)" in err
    code, out, err = run("engineers", "import", str(bad), "--skip-invalid", "--db", db_url)
    assert code == 1 and "imported 2 engineers" in out and "5 rows rejected" in err
    code, out, err = run("engineers", "import", str(SAMPLE), "--db", db_url)
    assert (code, out) == (0, "imported 6 engineers\n"), err
    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,name\n\u00e9".encode("latin-1"))
    code, out, err = run("engineers", "import", str(latin), "--db", db_url)
    assert code == 2 and "not UTF-8" in err
    code, out, err = run("engineers", "import", str(tmp_path / "missing.csv"), "--db", db_url)
    assert code == 2 and "cannot read" in err
    only_bad = tmp_path / "only-bad.csv"
    only_bad.write_text(csv_text(row(accepted="99")))
    code, out, err = run("engineers", "import", str(only_bad), "--skip-invalid", "--db", db_url)
    assert code == 2 and "1 rows rejected: nothing imported\n" in err
    code, out, err = run("engineers", "list", "--db", db_url)
    assert code == 0 and len(out.splitlines()) == 8
    hughes = next(line for line in out.splitlines() if line.startswith("r.hughes"))
    assert "Rhys Hughes" in hughes and "AR  90.0% CS 4.70 SQ 4.41" in hughes
    assert "annual_check,boiler_repair,gas,gas_safe" in hughes
    code, out, _ = run("engineers", "list", "--json", "--db", db_url)
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in records][:2] == ["a.begum", "alice.eng"]


def test_cli_add_and_password(db_url: str, tmp_path: Path) -> None:
    code, out, err = run("engineers", "list", "--db", db_url)
    assert (code, out) == (0, "no engineers\n")
    add = ["engineers", "add", "p.patel", "--name", "Priya Patel", "--gas-safe", "5566778"]
    add += ["--skills", "gas_safe,boiler_repair", "--lat", "53.45", "--lon", "-2.25"]
    code, out, err = run(*add, "--db", db_url)
    assert code == 0, err
    assert "engineer p.patel added" in out and "cannot log in" in out
    code, out, err = run(
        "users",
        "password",
        "p.patel",
        "--password-file",
        "-",
        "--db",
        db_url,
        stdin="patel-password\n",
    )
    assert (code, out) == (0, "password of p.patel set\n"), err
    secret = tmp_path / "pw"
    secret.write_text("another-password\n")
    code, out, err = run(
        *add, "--languages", "en,gu", "--password-file", str(secret), "--db", db_url
    )
    assert code == 0 and "engineer p.patel updated" in out and "unchanged" in err
    engine = make_engine(db_url)
    with session_factory(engine)() as session:
        assert authenticate(session, "p.patel", "patel-password") is not None
        engineer, _ = load_engineer(session, "p.patel")
        assert engineer.languages == ["en", "gu"]
    engine.dispose()
    code, out, err = run(
        *add[:3],
        "--name",
        "X",
        "--gas-safe",
        "1",
        "--skills",
        "gas",
        "--lat",
        "0",
        "--lon",
        "0",
        "--db",
        db_url,
    )
    assert code == 1 and "6-7 digits" in err
    code, out, err = run("users", "password", "nobody", "--db", db_url, stdin="long-enough\n")
    assert code == 1 and "not found" in err


@pytest.mark.integration
def test_cli_entry_point(db_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "boilertwin", "cloud", "engineers", "import", "-", "--db", db_url],
        input=SAMPLE.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "imported 6 engineers\n"), done.stderr
