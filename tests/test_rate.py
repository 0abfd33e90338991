"""The rating studio: studies, orders, tokens, answers, exports, the server and crash safety."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, run_module

from bridge.core.data import ratings as rating_data
from bridge.core.data.synth import SynthConfig, generate
from evaluation import stats
from evaluation.studio import OWNER, Study, rating_order, read_source
from evaluation.studio_http import make_server
from evaluation.studio_results import export, retest_path, status

# ------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic rated cases (6 cases, 2 per patient), a region-pair table, a triplet table."""
    root = tmp_path_factory.mktemp("rate-data")
    synth = generate(
        root / "synthetic",
        SynthConfig(per_class=1, cases=6, size=48, raters=2, views_per_lesion=1),
    )
    cases = synth / "rated"
    ids = sorted(p.name for p in cases.iterdir() if p.is_dir())
    (root / "groups.csv").write_text(
        "case,group\n" + "".join(f"{c},P{i // 2}\n" for i, c in enumerate(ids))
    )
    pairs = root / "pairs.csv"
    pairs.write_text(
        "id,image_a,box_a,image_b,box_b,group\n"
        + "".join(
            f'p{i},{cases / c / "0.jpg"},"4,4,30,30",{cases / c / "1.jpg"},,P{i // 2}\n'
            for i, c in enumerate(ids)
        )
    )
    triplets = root / "triplets.csv"
    triplets.write_text(
        "ref,box_ref,a,box_a,b,box_b,group\n"
        + "".join(
            f'rated/{c}/0.jpg,,rated/{c}/1.jpg,"0,0,40,40",rated/{ids[(i + 1) % len(ids)]}/1.jpg'
            f",,L{i}\n"
            for i, c in enumerate(ids)
        )
    )
    (synth / "triplets.csv").write_text(triplets.read_text())  # paths relative to the set
    return {"root": root, "cases": cases, "ids": ids, "pairs": pairs,
            "triplets": synth / "triplets.csv", "groups": root / "groups.csv"}  # fmt: skip


def new_study(data, tmp_path, design="hospital", source=None, raters=("A", "B"), **kwargs):
    source = source or (data["triplets"] if design == "2afc" else data["cases"])
    groups = kwargs.pop("groups", None)
    created = Study.create(
        "s", read_source(source, design, groups), list(raters), design,
        root=tmp_path / "studies", **kwargs,
    )  # fmt: skip
    return Study(created.path), created


@contextlib.contextmanager
def serving(study, **kwargs):
    server = make_server(study, "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class Client:
    """A raw HTTP client with one session cookie (the study's cookie name)."""

    def __init__(self, address, cookie=None, name="dermsim_s"):
        self.address, self.cookie, self.name = address, cookie, name

    def call(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(*self.address, timeout=60)
        headers = dict(headers or {})
        if self.cookie:
            headers["Cookie"] = f'other={{"json": 1}}; {self.name}={self.cookie}; x=a b'
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def login(self, token):
        status, headers, body = self.call("GET", f"/start/{token}")
        if status == 200:
            self.cookie = SimpleCookie(headers["Set-Cookie"])[self.name].value
        return status, headers, body

    def get(self, path):
        status, _, body = self.call("GET", path)
        return status, json.loads(body) if body.startswith(b"{") else body

    def post(self, path, payload, **headers):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        status, _, out = self.call(
            "POST", path, body, {"Content-Type": "application/json", **headers}
        )
        return status, json.loads(out)


def answer_for(study, rater, position, rng):
    if study.design == "2afc":
        return {"position": position, "side": ["left", "right"][rng.integers(2)]}
    return {
        "position": position,
        "color": int(rng.integers(1, 5)),
        "texture": int(rng.integers(1, 5)),
    }


# ------------------------------------------------------------------ studies and orders


def test_orders_are_seeded_each_item_once_and_repeats_come_later():
    for rater in range(3):
        order = rating_order(20, 0.2, seed=7, rater_index=rater)
        assert order == rating_order(20, 0.2, seed=7, rater_index=rater)
        firsts = [item for item, again in order if not again]
        assert sorted(firsts) == list(range(20))
        repeats = [item for item, again in order if again]
        assert len(repeats) == 4 and len(set(repeats)) == 4
        for item in repeats:  # shown again at least a quarter of the study later
            first, second = order.index((item, False)), order.index((item, True))
            assert second - first > 20 // 4
    assert rating_order(20, 0.2, 7, 0) != rating_order(20, 0.2, 7, 1)
    assert rating_order(20, 0.2, 7, 0) != rating_order(20, 0.2, 8, 0)
    assert rating_order(5, 0.0, 1, 0) == [(i, False) for i, _ in rating_order(5, 0.0, 1, 0)]
    assert len(rating_order(5, 0.01, 1, 0)) == 6  # a fraction > 0 repeats at least one


def test_cli_new_prints_links_and_stores_only_hashes(data, tmp_path):
    result = run_module(
        "evaluation.rate", "new", "--cases", str(data["cases"]), "--study", "clinic",
        "--root", str(tmp_path), "--raters", "Dr.A,Dr_B", "--repeat", "0.34", "--seed", "3",
        "--groups", str(data["groups"]),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    links = dict(line.split()[:2] for line in result.stdout.splitlines() if "/start/" in line)
    assert set(links) == {"Dr.A", "Dr_B", "owner"}
    assert "[synthetic data]" in result.stdout and "8 screens" in result.stdout  # 6 + 2 repeats
    folder = tmp_path / "clinic"
    stored = b"".join(p.read_bytes() for p in folder.iterdir())
    for link in links.values():
        assert link.split("/start/")[1].encode() not in stored  # tokens stored hashed only
    study = Study(folder / "study.sqlite")
    assert study.raters == ("Dr.A", "Dr_B") and study.design == "hospital"
    assert sqlite3.connect(study.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {it.group for it in study.items()} == {"P0", "P1", "P2"}
    for rater, link in links.items():
        assert study.login(link.split("/start/")[1])[0] == (OWNER if rater == "owner" else rater)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--design", "both"], ["unknown design 'both'"]),
        (["--raters", "A,A"], ["raters repeat a name"]),
        (["--raters", "Dr_A,dr_a"], ["raters repeat a name (letter case aside"]),
        (["--raters", "A,Owner"], ["rater name 'Owner' is reserved"]),
        (["--seed", "-1"], ["--seed must be a whole number >= 0"]),
        (["--raters", "A,@owner"], ["rater name '@owner'"]),
        (["--raters", ","], ["expected at least one rater"]),
        (["--repeat", "1.5"], ["--repeat must be a fraction in [0, 1]"]),
        (["--design", "2afc"], ["the 2afc design reads a triplet table"]),
        (["--study", "../up"], ["study name '../up'"]),
    ],
)
def test_cli_new_bad_values(data, tmp_path, args, fragments):
    base = {"--cases": str(data["cases"]), "--study": "s", "--root": str(tmp_path)}
    for key, value in zip(args[::2], args[1::2], strict=True):
        base[key] = value
    result = run_module("evaluation.rate", "new", *[x for kv in base.items() for x in kv])
    assert_one_line_error(result, *fragments)
    assert not any(tmp_path.rglob("*.sqlite")), "nothing half-written"


def test_cli_bad_sources_and_studies(data, tmp_path):
    broken = tmp_path / "broken" / "CASE001"
    broken.mkdir(parents=True)
    (broken / "1.jpg").write_bytes((data["cases"] / data["ids"][0] / "1.jpg").read_bytes())
    result = run_module("evaluation.rate", "new", "--cases", str(broken.parent), "--study", "x",
                        "--root", str(tmp_path))  # fmt: skip
    assert_one_line_error(result, "CASE001", "no reference image 0.jpg")
    triplets = tmp_path / "t.csv"
    triplets.write_text("ref,a,b\nnope.jpg,x.jpg,y.jpg\n")
    result = run_module("evaluation.rate", "new", "--cases", str(triplets), "--design", "2afc",
                        "--study", "x", "--root", str(tmp_path))  # fmt: skip
    assert_one_line_error(result, "t.csv", "line 2", "no such file")
    result = run_module("evaluation.rate", "new", "--cases", str(data["triplets"]), "--study",
                        "x", "--root", str(tmp_path))  # fmt: skip
    assert_one_line_error(result, "triplets.csv", "--design 2afc")  # not a region-pair table
    for command in (["serve"], ["status"], ["export", "--out", str(tmp_path / "r.csv")]):
        result = run_module("evaluation.rate", *command, "--study", "absent", "--root",
                            str(tmp_path))  # fmt: skip
        assert_one_line_error(result, "absent", "no such study")
    run_module("evaluation.rate", "new", "--cases", str(data["cases"]), "--study", "x",
               "--root", str(tmp_path))  # fmt: skip
    result = run_module("evaluation.rate", "new", "--cases", str(data["cases"]), "--study", "x",
                        "--root", str(tmp_path))  # fmt: skip
    assert_one_line_error(result, "study 'x' exists")
    result = run_module("evaluation.rate", "export", "--study", "x", "--root", str(tmp_path),
                        "--out", str(tmp_path / "r.csv"))  # fmt: skip
    assert_one_line_error(result, "no answers yet")
    assert not (tmp_path / "r.csv").exists()
    result = run_module("evaluation.rate", "serve", "--study", "x", "--root", str(tmp_path),
                        "--host", "0.0.0.0", "--port", "0")  # fmt: skip
    assert_one_line_error(result, "--host 0.0.0.0", "--cert", "--behind-tls-proxy")
    result = run_module("evaluation.rate", "links", "--study", "x", "--root", str(tmp_path),
                        "--reissue", "Nobody")  # fmt: skip
    assert_one_line_error(result, "unknown rater 'Nobody'")


# ------------------------------------------------------------------ access


def test_tokens_sessions_and_isolation(data, tmp_path, caplog):
    study, created = new_study(data, tmp_path)
    caplog.set_level(logging.DEBUG)
    with serving(study) as server:
        address = server.server_address[:2]
        anonymous = Client(address)
        for path in ("/api/me", "/api/screen/0", "/api/image/0/ref", "/api/status"):
            assert anonymous.get(path)[0] == 403, path
        assert anonymous.post("/api/answer", {"position": 0, "color": 1, "texture": 1})[0] == 403
        assert Client(address).login("not-a-token")[0] == 403
        assert Client(address, cookie="forged").get("/api/me")[0] == 403

        a, b, owner = Client(address), Client(address), Client(address)
        status_code, headers, body = a.login(created.tokens["A"])
        assert status_code == 200 and b"url=/" in body
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert created.tokens["A"] not in cookie and "Secure" not in cookie  # plain loopback
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        b.login(created.tokens["B"])
        owner.login(created.owner_token)
        assert a.get("/api/me")[1]["rater"] == "A" and b.get("/api/me")[1]["rater"] == "B"
        assert a.get("/api/status")[0] == 403  # a rater never sees the others' answers
        assert owner.get("/api/screen/0")[0] == 403
        assert owner.get("/api/me")[1] == {"owner": True, "study": "s"}
        # A's answers are A's: B's session sees its own screen 0, unanswered
        assert a.post("/api/answer", {"position": 0, "color": 2, "texture": 3})[0] == 200
        assert a.get("/api/screen/0")[1]["answer"] == {"color": 2, "texture": 3}
        assert b.get("/api/screen/0")[1]["answer"] is None
        screen = a.get("/api/screen/0")[1]
        assert set(screen) >= {"position", "images", "answer", "total", "answered"}
        assert not {"item", "repeat", "key", "group", "path"} & set(screen)  # blind
        assert a.call("GET", "/api/image/0/ref")[1]["Content-Type"] == "image/jpeg"
        # bad answers: one line each, nothing stored
        for payload, fragment in (
            ({"position": 0, "color": 5, "texture": 1}, "color: expected a whole score 1-4"),
            ({"position": 0, "color": 1}, "texture: expected a whole score 1-4"),
            ({"position": 0, "color": True, "texture": 1}, "color: expected"),
            ({"position": 99, "color": 1, "texture": 1}, "position 99"),
            ({"position": "0", "color": 1, "texture": 1}, "position: expected a whole number"),
            ([1, 2], "expected a JSON object"),
        ):
            code, reply = a.post("/api/answer", payload)
            assert code == 400 and fragment in reply["error"], (payload, reply)
        assert a.post("/api/answer", b"{not json")[0] == 400
        code, reply = a.post("/api/answer", {"position": 10**23, "color": 1, "texture": 1})
        assert code == 400 and "out of range" in reply["error"]
        assert a.call("GET", "/api/image/0/ref")[1]["Cache-Control"] == "no-store"
        code, reply = a.post("/api/answer", {"position": 1, "color": 1, "texture": 1},
                             Origin="http://evil.example")  # fmt: skip
        assert code == 403 and "cross-origin" in reply["error"]
        assert a.call("GET", "/api/me", headers={"Host": "evil.example"})[0] == 403
        assert a.get("/api/image/0/c9")[0] == 400
        # a reissued token replaces the old one and ends its sessions
        new_token = study.reissue("A")
        assert a.get("/api/me")[0] == 403
        assert Client(address).login(created.tokens["A"])[0] == 403
        assert Client(address).login(new_token)[0] == 200
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/start/<token>" in logged
    for token in (*created.tokens.values(), created.owner_token, new_token):
        assert token not in logged
    assert [(x["rater"], x["position"]) for x in study.answers()] == [("A", 0)]


def test_https_with_a_certificate(data, tmp_path):
    import ssl

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    study, created = new_study(data, tmp_path)
    with pytest.raises(ValueError, match="give both --cert and --key"):
        make_server(study, cert=str(cert))
    with pytest.raises(ValueError, match="cannot load --cert"):
        make_server(study, cert=str(key), key=str(key))
    with serving(study, cert=str(cert), key=str(key)) as server:
        assert server.url.startswith("https://")
        idle = socket.create_connection(server.server_address[:2])  # says nothing at all
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        conn = http.client.HTTPSConnection(*server.server_address[:2], context=context, timeout=30)
        conn.request("GET", f"/start/{created.tokens['B']}")
        response = conn.getresponse()
        assert response.status == 200
        assert "Secure" in response.getheader("Set-Cookie")  # served while `idle` waits
        conn.close()
        idle.close()


def test_behind_a_tls_proxy(data, tmp_path):
    study, created = new_study(data, tmp_path)
    with pytest.raises(ValueError, match="expected the proxy's address"):
        make_server(study, "0.0.0.0", 0, public_origin="http://ratings.example.org")
    public = "https://ratings.example.org"
    with serving(study, public_origin=public) as server:
        assert server.link("x") == f"{public}/start/x"
        client = Client(server.server_address[:2], name="__Host-dermsim_s")
        host = {"Host": "ratings.example.org"}  # the proxy keeps the public Host
        code, headers, _ = client.call("GET", f"/start/{created.tokens['A']}", headers=host)
        assert code == 200
        cookie = headers["Set-Cookie"]
        assert cookie.startswith("__Host-dermsim_s=") and "Secure" in cookie
        client.cookie = SimpleCookie(cookie)["__Host-dermsim_s"].value
        payload = json.dumps({"position": 0, "color": 3, "texture": 2}).encode()
        code, _, _ = client.call("POST", "/api/answer", payload, {**host, "Origin": public})
        assert code == 200
        code, _, _ = client.call(
            "POST", "/api/answer", payload, {**host, "Origin": "https://evil.example"}
        )
        assert code == 403
        assert client.call("GET", "/api/me", headers={"Host": "evil.example"})[0] == 403


# ------------------------------------------------------------------ answers, exports, status


def rate_everything(study, created, seed=0):
    """Every rater answers every screen through the API; returns what was sent per rater."""
    rng = np.random.default_rng(seed)
    sent = {}
    with serving(study) as server:
        for rater in study.raters:
            client = Client(server.server_address[:2])
            client.login(created.tokens[rater])
            total = client.get("/api/me")[1]["total"]
            sent[rater] = [answer_for(study, rater, p, rng) for p in range(total)]
            for payload in sent[rater]:
                code, reply = client.post("/api/answer", payload)
                assert code == 200, reply
            assert client.get("/api/me")[1]["next"] is None
    return sent


def test_hospital_export_reads_back_with_retest_and_status(data, tmp_path):
    study, created = new_study(data, tmp_path, repeat=0.34, groups=data["groups"])
    sent = rate_everything(study, created)
    out = tmp_path / "export" / "ratings.csv"
    marker = out.parent / "SYNTHETIC"  # synthetic items: the export is flagged like them
    assert export(study, out) == [out, retest_path(out), marker]
    with pytest.raises(ValueError, match=r"expected a \.csv file"):
        export(study, study.path)  # never over the study itself
    assert Study(study.path).answers() == study.answers()
    read = rating_data.read_rated_cases(data["cases"], out)
    assert read.raters == ("A", "B") and set(read.aspects) == {"color", "texture", "overall"}
    assert {c.id: c.group for c in read.cases} == {
        c: f"P{i // 2}" for i, c in enumerate(data["ids"])
    }
    # the export holds each rater's FIRST answer of each item (repeats go to the retest table)
    slots = {r: study._slots(r) for r in study.raters}
    items = study.items()
    expected = {}
    for rater, payloads in sent.items():
        for (_, item, again, _), payload in zip(slots[rater], payloads, strict=True):
            if not again:
                for aspect in ("color", "texture"):
                    expected[items[item].key, rater, aspect] = payload[aspect]
    got = {(r.item, r.rater, r.aspect): r.score for r in read.ratings if r.aspect != "overall"}
    assert got == expected
    retest = retest_path(out).read_text().splitlines()
    assert retest[0] == "case,rater,aspect,first,repeat" and len(retest) == 1 + 2 * 2 * 2
    # status: the raters' agreement equals evaluation.stats on the answers sent
    report = status(study)
    for aspect in ("color", "texture"):
        _, table = read.scores(aspect)
        assert report["agreement"][aspect]["icc_2_1"]["value"] == pytest.approx(
            stats.icc_2_1(table)
        )
        alpha = stats.krippendorff_alpha(table, "ordinal")
        assert report["agreement"][aspect]["krippendorff_alpha_ordinal"]["value"] == pytest.approx(
            alpha
        )
    for rater in study.raters:
        assert report["retest"][rater]["n"] == 2
        assert [r["answered"] for r in report["raters"]] == [8, 8]
    text = run_module(
        "evaluation.rate", "status", "--study", "s", "--root", str(tmp_path / "studies")
    )
    assert text.returncode == 0 and "2 repeats" in text.stdout, text.stderr
    assert re.search(r"color +ICC\(2,1\) -?\d\.\d{3} ", text.stdout), text.stdout


def test_pairs_and_2afc_exports_are_what_the_readers_read(data, tmp_path):
    study, created = new_study(data, tmp_path / "pairs", source=data["pairs"])
    sent = rate_everything(study, created, seed=1)
    out = tmp_path / "pairs.csv"
    export(study, out)
    pairs = rating_data.read_region_pairs(out)
    assert not pairs.synthetic  # a table outside the synthetic set: no marker written
    assert [p.id for p in pairs.pairs] == [f"p{i}" for i in range(6)]
    assert pairs.pairs[0].box_a == (4, 4, 30, 30) and pairs.pairs[0].box_b is None
    assert {p.group for p in pairs.pairs} == {"P0", "P1", "P2"}
    assert len(pairs.ratings) == 6 * 2 * 2 and pairs.raters == ("A", "B")

    study, created = new_study(data, tmp_path / "afc", design="2afc", repeat=0.2)
    sent = rate_everything(study, created, seed=2)
    out = tmp_path / "afc" / "judgements.csv"
    export(study, out)
    judged = rating_data.read_triplets(out)
    assert judged.synthetic  # triplets of the synthetic set: the marker beside the export
    assert len(judged.triplets) == 6 and judged.raters == ("A", "B")
    assert len(judged.judgements) == 12
    assert judged.triplets[0].box_a == (0, 0, 40, 40)
    # the side shown is mapped back to the triplet's a or b through the rater's swap
    slots = {r: study._slots(r) for r in study.raters}
    items = study.items()
    expected = {}
    for rater, payloads in sent.items():
        for (_, item, again, swap), payload in zip(slots[rater], payloads, strict=True):
            if not again:
                expected[items[item].key, rater] = (
                    "a" if (payload["side"] == "left") != swap else "b"
                )
    assert {(j.triplet, j.rater): j.choice for j in judged.judgements} == expected
    assert any(swap for s in slots.values() for *_, swap in s)  # sides are drawn, not fixed
    report = status(study)
    table = np.array([[np.nan] * 2] * 6)
    for j in judged.judgements:
        table[[t.id for t in judged.triplets].index(j.triplet), study.raters.index(j.rater)] = (
            j.choice == "b"
        )
    alpha = stats.krippendorff_alpha(table, "nominal")
    assert report["agreement"]["choice"]["krippendorff_alpha_nominal"]["value"] in (
        None,
        pytest.approx(alpha),
    )
    assert report["retest"]["A"]["n"] == 1


def test_concurrent_raters_lose_and_mix_nothing(data, tmp_path):
    raters = [f"R{i}" for i in range(8)]
    study, created = new_study(data, tmp_path, raters=raters, repeat=0.34)
    sent: dict[str, list] = {}
    with serving(study) as server:

        def rater_session(rater):
            rng = np.random.default_rng(raters.index(rater))
            client = Client(server.server_address[:2])
            assert client.login(created.tokens[rater])[0] == 200
            total = client.get("/api/me")[1]["total"]
            payloads = [answer_for(study, rater, p, rng) for p in range(total)]
            payloads += [answer_for(study, rater, p, rng) for p in range(0, total, 3)]  # changes
            for payload in payloads:
                code, reply = client.post("/api/answer", payload)
                assert code == 200, reply
            return rater, payloads

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            for rater, payloads in pool.map(rater_session, raters):
                sent[rater] = payloads
        assert time.perf_counter() - started < 120
    stored = {(a["rater"], a["position"]): (a["color"], a["texture"]) for a in study.answers()}
    final = {}
    for rater, payloads in sent.items():
        for p in payloads:  # the last answer sent for a screen is the one kept
            final[rater, p["position"]] = (p["color"], p["texture"])
    assert stored == final and len(stored) == 8 * 8


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(tmp_path, port):
    proc = subprocess.Popen(
        [sys.executable, "-m", "evaluation.rate", "serve", "--study", "s", "--root",
         str(tmp_path / "studies"), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen = []
    for line in proc.stdout:  # log lines first, then the address (or the process ends)
        seen.append(line)
        if line.startswith("dermsim rating studio: http://127.0.0.1:"):
            break
    else:
        proc.kill()
        pytest.fail("the server did not start: " + "".join(seen))
    return proc


def test_kill_9_loses_no_confirmed_answer_and_raters_resume(data, tmp_path):
    _, created = new_study(data, tmp_path)
    port = _free_port()
    proc = _start_server(tmp_path, port)
    try:
        client = Client(("127.0.0.1", port))
        client.login(created.tokens["B"])
        confirmed = [{"position": p, "color": 1 + p % 4, "texture": 4 - p % 4} for p in range(4)]
        for payload in confirmed:
            assert client.post("/api/answer", payload)[0] == 200
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc = _start_server(tmp_path, port)
        me = client.get("/api/me")[1]  # the same session works after the restart
        assert me["rater"] == "B" and me["answered"] == 4 and me["next"] == 4
        for payload in confirmed:
            answer = client.get(f"/api/screen/{payload['position']}")[1]["answer"]
            assert answer == {"color": payload["color"], "texture": payload["texture"]}
    finally:
        proc.kill()
        proc.wait(timeout=30)


# ------------------------------------------------------------------ 2AFC statistics


def test_two_afc_scores_equal_a_count_over_judgements():
    from evaluation.two_afc import metric_agreement, rater_agreement

    rng = np.random.default_rng(0)
    n = rng.integers(1, 6, size=40).astype(float)
    chose_a = np.array([rng.integers(0, k + 1) for k in n], float)
    distances = rng.random((40, 2))
    distances[:5, 1] = distances[:5, 0]  # ties
    agree = metric_agreement(distances, n, chose_a)
    for t in range(40):
        choices = ["a"] * int(chose_a[t]) + ["b"] * int(n[t] - chose_a[t])
        d_a, d_b = distances[t]
        prefers = "a" if d_a < d_b else "b" if d_b < d_a else None
        expected = sum(0.5 if prefers is None else c == prefers for c in choices)
        assert agree[t] == pytest.approx(expected)
        others = [
            np.mean([o == c for k, o in enumerate(choices) if k != j])
            for j, c in enumerate(choices)
        ] if len(choices) >= 2 else []  # fmt: skip
        assert rater_agreement(n, chose_a)[t] == pytest.approx(sum(others))


# ------------------------------------------------------------------ browser


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    """One tiny VGG16 LPIPS scorer (torch origin): enough for a comparison run."""
    from bridge.core.weights import random_state_dict, write_state_dict
    from bridge.export import export as export_model
    from bridge.export import source_from_weights

    root = tmp_path_factory.mktemp("rate-models")
    weights = write_state_dict(random_state_dict("vgg16_tiny", 4, seed=3), root / "w.safetensors")
    export_model(source_from_weights("vgg16_tiny", weights), "lpips", "torch", root / "models")
    return root / "models"


SCREENSHOT = ROOT / "docs" / "rating-studio.png"


def _save_screenshot(page, tmp_path):
    """Always take the screenshot; write docs/rating-studio.png when asked to."""
    from PIL import Image

    raw = tmp_path / "rating.png"
    page.screenshot(path=str(raw), full_page=True)
    assert raw.stat().st_size > 0
    if os.environ.get("DERMSIM_UPDATE_SCREENSHOTS") == "1":
        image = Image.open(raw).convert("RGB").quantize(colors=128, dither=Image.Dither.NONE)
        image.save(SCREENSHOT, optimize=True)


def test_two_raters_and_a_2afc_study_in_a_real_browser(data, scorer, tmp_path):
    from test_explore import CHROMIUM, CHROMIUM_ARGS, _browser

    sync_playwright = _browser()
    hospital, h_tokens = new_study(data, tmp_path / "h", repeat=0.34)
    afc, a_tokens = new_study(data, tmp_path / "a", design="2afc")
    rng = np.random.default_rng(5)
    entered: dict[tuple[str, int], dict] = {}
    with serving(hospital) as h_server, serving(afc) as a_server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        problems = []

        def open_page(server, token):
            context = browser.new_context(viewport={"width": 1100, "height": 800})
            page = context.new_page()
            page.on("pageerror", lambda err: problems.append(str(err)))
            page.on("request", lambda r: r.url.startswith(server.url) or problems.append(r.url))
            page.goto(server.link(token))
            page.wait_for_selector("body[data-ready='true']")
            assert "/start/" not in page.url  # sent on to a URL without the token
            return context, page

        def at(page, position):
            page.wait_for_selector(f"body[data-position='{position}']")

        # rater A, keyboard only: 1-4 scores colour then texture; saved, then the next screen
        context, page = open_page(h_server, h_tokens.tokens["A"])
        total = hospital.progress("A")["total"]
        assert page.inner_text("[data-testid=progress]") == f"0 / {total} answered"
        for position in range(total):
            at(page, position)
            color, texture = (int(v) for v in rng.integers(1, 5, size=2))
            entered["A", position] = {"color": color, "texture": texture}
            if position == 2:
                _save_screenshot(page, tmp_path)
            page.keyboard.press(str(color))
            page.keyboard.press(str(texture))
        page.wait_for_selector("[data-testid=done]:not([hidden])")
        # back to the last screen with the arrow key, change the texture
        page.click("#review")
        at(page, 0)
        for position in range(1, total):
            page.keyboard.press("ArrowRight")
            at(page, position)
        last = entered["A", total - 1]
        assert page.locator(".scale[data-aspect=color] button.selected").inner_text() == str(
            last["color"]
        )
        page.keyboard.press("t")
        new_texture = 1 + last["texture"] % 4
        page.keyboard.press(str(new_texture))
        page.wait_for_selector("[data-testid=save-state].saved")
        entered["A", total - 1] = {**last, "texture": new_texture}
        context.close()

        # rater B, mouse: half the screens, an answer the network loses, then a new browser
        context, page = open_page(h_server, h_tokens.tokens["B"])
        half = total // 2
        for position in range(half):
            at(page, position)
            color, texture = (int(v) for v in rng.integers(1, 5, size=2))
            if position == 1:  # the answer does not reach the server: the page says so, stays
                page.route("**/api/answer", lambda route: route.abort())
                for _ in range(2):
                    page.click(f".scale[data-aspect=color] button[data-value='{color}']")
                    page.click(f".scale[data-aspect=texture] button[data-value='{texture}']")
                    page.wait_for_selector("[data-testid=not-saved]:not([hidden])")
                    assert page.inner_text("[data-testid=save-state]") == "not saved"
                    assert page.get_attribute("body", "data-position") == "1"
                    assert hospital.progress("B")["answered"] == 1
                    if _ == 0:  # going back drops the unsaved answer; screen 0 keeps its own
                        page.keyboard.press("ArrowLeft")
                        at(page, 0)
                        assert page.is_hidden("[data-testid=not-saved]")
                        page.keyboard.press("ArrowRight")
                        at(page, 1)
                page.unroute("**/api/answer")
                page.click("#retry")
            else:
                page.click(f".scale[data-aspect=color] button[data-value='{color}']")
                page.click(f".scale[data-aspect=texture] button[data-value='{texture}']")
            entered["B", position] = {"color": color, "texture": texture}
        at(page, half)
        context.close()
        context, page = open_page(h_server, h_tokens.tokens["B"])  # another browser: resumes
        at(page, half)
        assert page.inner_text("[data-testid=progress]") == f"{half} / {total} answered"
        for position in range(half, total):
            at(page, position)
            color, texture = (int(v) for v in rng.integers(1, 5, size=2))
            entered["B", position] = {"color": color, "texture": texture}
            page.keyboard.press(str(color))
            page.keyboard.press(str(texture))
        page.wait_for_selector("[data-testid=done]:not([hidden])")
        context.close()

        # the owner's page shows both raters done
        context, page = open_page(h_server, h_tokens.owner_token)
        assert page.url.endswith("/owner")
        page.wait_for_selector("#status:not([hidden])")
        assert page.inner_text("[data-testid=raters]").count(f"{total} / {total}") == 2
        context.close()

        # a 2AFC study: A with keys, B clicking the images
        chosen: dict[tuple[str, int], str] = {}
        for rater in ("A", "B"):
            context, page = open_page(a_server, a_tokens.tokens[rater])
            for position in range(afc.progress(rater)["total"]):
                at(page, position)
                side = ["left", "right"][int(rng.integers(2))]
                chosen[rater, position] = side
                if rater == "A":
                    page.keyboard.press("1" if side == "left" else "2")
                else:
                    page.click(f"figure.candidate[data-image={side}] img")
            page.wait_for_selector("[data-testid=done]:not([hidden])")
            context.close()
        browser.close()
    assert not problems, problems

    # the database holds exactly what was entered
    stored = {(a["rater"], a["position"]): {"color": a["color"], "texture": a["texture"]}
              for a in hospital.answers()}  # fmt: skip
    assert stored == entered
    # export both, run the comparison on them, and check its inter-rater numbers
    ratings, judgements = tmp_path / "ratings.csv", tmp_path / "judgements.csv"
    export(hospital, ratings)
    export(afc, judgements)
    report = tmp_path / "report"
    result = run_module(
        "evaluation.compare", "--models", str(scorer), "--rated", str(data["cases"]),
        "--ratings", str(ratings), "--2afc", str(judgements), "--out", str(report),
        "--bootstrap", "200", "--folds", "2", "--cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((report / "results.json").read_text())
    keys = [it.key for it in hospital.items()]
    for aspect in ("color", "texture"):
        table = np.full((len(keys), 2), np.nan)
        for (rater, position), values in entered.items():
            _, item, again, _ = hospital._slots(rater)[position]
            if not again:
                table[item, "AB".index(rater)] = values[aspect]
        raters = results["agreement"]["aspects"][aspect]["raters"]
        assert raters["icc_2_1"] == pytest.approx(stats.icc_2_1(table), abs=1e-12)
        alpha = stats.krippendorff_alpha(table, "interval")
        assert raters["krippendorff_alpha_interval"] == pytest.approx(alpha, abs=1e-12)
    afc_result = results["two_afc"]
    assert afc_result["n_judgements"] == 12 and afc_result["raters"] == ["A", "B"]
    choices = {}  # each triplet judged by both raters: the ceiling is how often they agree
    for (rater, position), side in chosen.items():
        _, item, _, swap = afc._slots(rater)[position]
        choices.setdefault(item, []).append("a" if (side == "left") != swap else "b")
    same = np.mean([c[0] == c[1] for c in choices.values()])
    assert afc_result["ceiling"]["estimate"] == pytest.approx(same)
    assert "2AFC agreement" in (report / "report.md").read_text()
    assert (report / "two_afc.csv").read_text().count("\n") == 1 + len(afc_result["rows"])


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ("ref,a,b,rater,choice\n{0},{1},{2},A,c\n", "line 2: choice 'c': expected a or b"),
        ("ref,a,b,rater,choice\n{0},{1},{2},A,a\n{0},{1},{2},A,b\n", "judged triplet 't1' twice"),
        ("id,ref,a,b\nx,{0},{1},{2}\nx,{0},{2},{1}\n", "id 'x' names two different triplets"),
        ("ref,a,b\n{0},{1},{2}\n{0},{1},{2}\n", "triplet 't1' appears twice"),
        ("ref,a,b,rater\n{0},{1},{2},A\n", "needs both rater and choice columns"),
        ('ref,a,box_a,b\n{0},{1},"1,2",{2}\n', "column box_a"),
        ("ref,a\n{0},{1}\n", "b"),
    ],
)
def test_triplet_tables_bad_input(data, tmp_path, rows, fragment):
    images = [data["cases"] / data["ids"][0] / f"{i}.jpg" for i in (0, 1, 2)]
    table = tmp_path / "t.csv"
    table.write_text(rows.format(*images))
    with pytest.raises(ValueError, match=re.escape(fragment)) as err:
        rating_data.read_triplets(table)
    assert str(table) in str(err.value) and "\n" not in str(err.value)
