"""Rollback: `models rollback` (previous production version or --to V, refusing a damaged target
with nothing changed, a lineage record and an alert) and the policy of `monitor --rollback`
(`decide`) over hand-made online quality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_nb.cli import main
from mlops_nb.errors import RegistryError
from mlops_nb.guards.lineage import LineageStore, default_path
from mlops_nb.guards.registry import Registry, default_root
from mlops_nb.monitor import rollback as rb
from mlops_nb.monitor.rollback import QualityInput, decide
from mlops_nb.monitor.webhook import ENV_URL, Retry, Webhook
from tests.receiver import iris_project, receiving

FLOOR = {"accuracy": 0.8}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Three versions: 1 and then 2 have been production (2 is now), 3 a candidate."""
    root = iris_project(tmp_path_factory.mktemp("rb") / "p", versions=3)
    Registry(default_root(root)).promote("iris", 2)
    return root


@pytest.fixture
def root(built, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(built, tmp_path / "p", symlinks=True))


def reg_of(root: Path) -> Registry:
    return Registry(default_root(root))


def stages(root: Path) -> dict[int, str]:
    return {v.version: v.stage for v in reg_of(root).versions("iris")}


def q(version: int, *, labelled: int = 500, enough: bool = True, below: bool = False,
      accuracy: float = 0.9, floors: dict | None = None) -> QualityInput:
    return QualityInput(version, labelled, enough, below, {"accuracy": accuracy},
                          FLOOR if floors is None else floors)


def damage(root: Path, version: int) -> None:
    model = next(p for p in (reg_of(root).get("iris", version).path / "model").iterdir()
                 if p.suffix == ".skops")
    model.write_bytes(model.read_bytes()[:-50] + b"\0" * 50)


# --- decide ---------------------------------------------------------------------------------


def test_decide_rolls_back_a_production_version_below_its_floor(root):
    d = decide(reg_of(root), "iris", {2: q(2, below=True, accuracy=0.6), 1: q(1)})
    assert (d.rollback, d.current, d.target) == (True, 2, 1)
    assert "iris:2 is below its floor online (accuracy 0.6 vs floor 0.8" in d.reason
    assert "iris:1's online quality is above it" in d.reason
    assert d.figures["previous"] == {"version": 1, "source": "online",
                                     "metrics": {"accuracy": 0.9}}


def test_decide_uses_the_previous_versions_offline_metrics_without_its_feedback(root):
    d = decide(reg_of(root), "iris", {2: q(2, below=True, accuracy=0.6)})
    assert d.rollback and d.target == 1 and "iris:1's offline quality" in d.reason
    # offline accuracy of v1 is 0.9: a floor of 0.95 it does not clear
    d = decide(reg_of(root), "iris", {2: q(2, below=True, accuracy=0.6,
                                           floors={"accuracy": 0.95})})
    assert not d.rollback and "offline quality is not above it" in d.reason
    # too few labels for v1 counts as no feedback: its offline metrics decide
    d = decide(reg_of(root), "iris", {2: q(2, below=True), 1: q(1, enough=False, below=True,
                                                                accuracy=0.1)})
    assert d.rollback and "offline" in d.reason


@pytest.mark.parametrize("quality, says", [
    ({}, "no online quality yet"),
    ({1: q(1)}, "no online quality of iris:2 yet"),
    ({2: q(2, labelled=12, enough=False, below=True)}, "12 labelled record(s), too few"),
    ({2: q(2)}, "holds its floor online"),
    ({2: q(2, below=True), 1: q(1, below=True, accuracy=0.7)}, "and so is iris:1 online"),
    ({2: q(2, below=True, floors={})}, "no floor is set"),
    ({2: q(2, below=True, floors={"f1": 0.5})}, "it has none of the metrics with a floor (f1)"),
])
def test_decide_does_not_roll_back(root, quality, says):
    d = decide(reg_of(root), "iris", quality)
    assert not d.rollback and says in d.reason
    assert stages(root) == {1: "archived", 2: "production", 3: "candidate"}


def test_decide_with_lower_is_better_metrics(root):
    def rmse(version: int, value: float, below: bool) -> QualityInput:
        return QualityInput(version, 100, True, below, {"rmse": value}, {"rmse": 1.0},
                              frozenset({"rmse"}))

    assert decide(reg_of(root), "iris", {2: rmse(2, 2.0, True), 1: rmse(1, 0.5, False)}
                  ).rollback
    assert not decide(reg_of(root), "iris", {2: rmse(2, 2.0, True),
                                             1: rmse(1, 1.5, False)}).rollback


def test_decide_never_to_a_version_whose_artifacts_fail(root):
    damage(root, 1)
    d = decide(reg_of(root), "iris", {2: q(2, below=True), 1: q(1)})
    assert not d.rollback and "not rolling back to iris:1" in d.reason
    assert "hash" in d.reason or "check" in d.reason


def test_no_flapping_the_next_automatic_rollback_waits_for_a_human(root):
    reg = reg_of(root)
    reg.promote("iris", 3)  # 3 is production, 2 before it, 1 before that
    decision, done = rb.automatic(root, "iris", {3: q(3, below=True), 2: q(2)}, webhook=None)
    assert done is not None and (done.from_version, done.to_version) == (3, 2)
    assert stages(root) == {1: "archived", 2: "production", 3: "archived"}
    # 2 is bad too: refused, it came back by an automatic rollback
    d = decide(reg, "iris", {2: q(2, below=True), 1: q(1)})
    assert not d.rollback and "waits for a human" in d.reason
    assert rb.automatic(root, "iris", {2: q(2, below=True), 1: q(1)}, webhook=None)[1] is None
    # a human promotes 2 again by hand: the policy may act again (to 1; 3 was rolled away from)
    reg.set_stage("iris", 2, "production", reason="checked it, by hand")
    d = decide(reg, "iris", {2: q(2, below=True), 1: q(1)})
    assert d.rollback and d.target == 1
    # ... as after a human rollback
    main(["-C", str(root), "models", "rollback", "iris", "--to", "3"])
    assert decide(reg, "iris", {3: q(3, below=True), 2: q(2)}).rollback


# --- rollback -------------------------------------------------------------------------------


def test_models_rollback_puts_the_previous_version_back_and_alerts(root, capsys, monkeypatch):
    with receiving() as rec:
        monkeypatch.setenv(ENV_URL, rec.url)
        assert main(["-C", str(root), "models", "rollback", "iris", "--reason",
                     "accuracy fell"]) == 0
    out = capsys.readouterr().out
    assert "rolled back iris:2 -> iris:1 because accuracy fell" in out
    assert stages(root) == {1: "production", 2: "archived", 3: "candidate"}
    last = reg_of(root).get("iris", 2).info["history"][-1]
    assert last["stage"] == "archived" and "accuracy fell" in last["reason"]
    (body,) = rec.bodies()
    assert body["text"] == "[mlops-nb] ROLLBACK iris: rolled back iris:2 -&gt; iris:1 because" \
                           " accuracy fell"
    assert (body["mlops_nb"]["figures"]["from"], body["mlops_nb"]["figures"]["to"]) == (2, 1)
    (event,) = LineageStore(default_path(root)).events("rollback")
    assert (event["subject"], event["payload"]["from"], event["payload"]["to"],
            event["payload"]["reason"], event["payload"]["automatic"]) == (
        "iris", 2, 1, "accuracy fell", False)
    assert LineageStore(default_path(root)).events("alert")[0]["payload"]["event"] == "rollback"


def test_rollback_to_a_chosen_version(root, capsys):
    assert main(["-C", str(root), "models", "rollback", "iris", "--to", "3"]) == 0
    assert stages(root) == {1: "archived", 2: "archived", 3: "production"}
    assert "no webhook" not in capsys.readouterr().err  # no webhook set: nothing to say


def test_a_damaged_target_is_refused_naming_it_and_nothing_changes(root, capsys):
    damage(root, 1)
    before = {v.version: v.info["history"] for v in reg_of(root).versions("iris")}
    assert main(["-C", str(root), "models", "rollback", "iris"]) == 9
    err = capsys.readouterr().err
    assert "not rolling back iris:2 to iris:1" in err and "nothing changed" in err
    assert "--to V" in err
    assert {v.version: v.info["history"] for v in reg_of(root).versions("iris")} == before
    assert LineageStore(default_path(root)).events("rollback") == []


def test_no_previous_version_is_a_clear_error(tmp_path, capsys):
    root = iris_project(tmp_path / "p", versions=2)  # 1 production, 2 never was
    assert main(["-C", str(root), "models", "rollback", "iris"]) == 9
    assert "iris:1 has no earlier production version to roll back to" in \
        capsys.readouterr().err
    assert main(["-C", str(root), "models", "rollback", "iris", "--to", "1"]) == 2
    assert "iris:1 is the production version already" in capsys.readouterr().err
    assert main(["-C", str(root), "models", "rollback", "iris", "--to", "7"]) == 9
    assert "has no version 7" in capsys.readouterr().err
    assert main(["-C", str(root), "models", "rollback", "iris", "--to", "1\n'; rm -rf /"]) == 9
    assert "unknown version" in capsys.readouterr().err
    assert main(["-C", str(root), "models", "rollback", "iris:1"]) == 2
    assert main(["-C", str(root), "models", "rollback", "nosuch"]) == 9
    assert stages(root) == {1: "production", 2: "candidate"}


def test_hostile_reasons_are_kept_verbatim_and_sent_escaped(root):
    reason = 'it\'s "bad"\nsecond line <!here> & ünï模型'
    with receiving() as rec:
        done = rb.rollback(root, "iris", reason=reason, webhook=Webhook(rec.url, "t"),
                           retry=Retry(total=1, first_delay=0.05))
    assert done.reason == reason.strip()
    history = reg_of(root).get("iris", 1).info["history"][-1]["reason"]
    assert history.endswith(reason)
    (body,) = rec.bodies()
    assert "\n" not in body["text"] and "&lt;!here&gt; &amp; ünï模型" in body["text"]
    assert body["mlops_nb"]["figures"]["reason"] == reason
    with pytest.raises(Exception, match="keep it under"):
        rb.rollback(root, "iris", reason="x" * 5000)


def test_a_rollback_whose_alert_cannot_go_out_still_happens_and_says_so(root, capsys,
                                                                        monkeypatch):
    with receiving() as rec:
        rec.answers = [404]  # final at once (a 5xx would be retried for seconds)
        monkeypatch.setenv(ENV_URL, rec.url)
        assert main(["-C", str(root), "models", "rollback", "iris", "--to", "1"]) == 0
    assert stages(root)[1] == "production"
    err = capsys.readouterr().err
    assert "1 notification(s) not delivered (HTTP 404" in err and rec.url not in err
    from mlops_nb.monitor import alerts

    assert alerts.pending(root)[0]["event"] == "rollback"


def test_monitor_rollback_with_no_online_quality_does_nothing(root, capsys):
    from tests.receiver import iris_rows, write_serving_log

    write_serving_log(root, iris_rows(), version=2)
    assert main(["-C", str(root), "monitor", "iris", "--rollback", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rollback"]["rolled_back"] is False
    assert "no online quality yet" in report["rollback"]["decision"]
    assert stages(root) == {1: "archived", 2: "production", 3: "candidate"}


def test_a_refused_rollback_target_raises_registry_error(root):
    damage(root, 3)
    with pytest.raises(RegistryError, match="iris:3"):
        rb.rollback(root, "iris", to=3)


# --- monitor's wiring, as the online-quality part will call it -----------------------------

OK_REPORT = {"status": "ok", "model": "iris:2", "drift_detected": False,
             "skew": {"anomalies": []}}


def test_monitor_rollback_on_online_quality_sends_one_alert_telling_the_rollback(root):
    from argparse import Namespace

    from mlops_nb.cli.alerting import after_monitor

    bad = {2: q(2, below=True, accuracy=0.6), 1: q(1)}
    with receiving() as rec:
        hook = Webhook(rec.url, "t")
        lines = after_monitor(Namespace(rollback=True), root, "iris", dict(OK_REPORT), hook, bad)
        assert stages(root) == {1: "production", 2: "archived", 3: "candidate"}
        (body,) = rec.bodies()  # one notification: the incident, telling the rollback
        assert (body["mlops_nb"]["event"], body["mlops_nb"]["check"]) == ("opened", "quality")
        assert "below its floor: accuracy 0.6 vs floor 0.8" in body["text"]
        assert "rolled back iris:2 -&gt; iris:1 because" in body["text"]
        assert body["mlops_nb"]["figures"]["rollback"]["to"] == 1
        assert any("rollback: rolled back iris:2 -> iris:1" in line for line in lines)
        # the next run: version 1 holds its floor: resolved, and no rollback
        report = dict(OK_REPORT, model="iris:1")
        lines = after_monitor(Namespace(rollback=True), root, "iris", report, hook,
                              {1: q(1), 2: q(2, below=True)})
        assert [b["mlops_nb"]["event"] for b in rec.bodies()] == ["opened", "resolved"]
        assert report["rollback"]["rolled_back"] is False
    store = LineageStore(default_path(root))
    (event,) = store.events("rollback")
    assert event["payload"]["automatic"] and event["payload"]["figures"]["labelled"] == 500
    assert [e["payload"]["event"] for e in reversed(store.events("alert"))] == ["opened",
                                                                                "resolved"]
    assert reg_of(root).get("iris", 1).info["history"][-1]["reason"].startswith(rb.AUTO)


def test_a_rollback_while_the_quality_incident_is_open_sends_its_own_notice(root):
    from argparse import Namespace

    from mlops_nb.cli.alerting import after_monitor

    bad = {2: q(2, below=True, accuracy=0.6), 1: q(1)}
    with receiving() as rec:
        hook = Webhook(rec.url, "t")
        after_monitor(Namespace(rollback=False), root, "iris", dict(OK_REPORT), hook, bad)
        assert stages(root)[2] == "production"
        after_monitor(Namespace(rollback=True), root, "iris", dict(OK_REPORT), hook, bad)
    assert [b["mlops_nb"]["event"] for b in rec.bodies()] == ["opened", "rollback"]
    assert stages(root)[1] == "production"


def test_too_few_labelled_records_say_so_and_do_not_alert(root):
    from argparse import Namespace

    from mlops_nb.cli.alerting import after_monitor

    few = {2: q(2, labelled=7, enough=False, below=True, accuracy=0.1), 1: q(1)}
    with receiving() as rec:
        report = dict(OK_REPORT)
        lines = after_monitor(Namespace(rollback=True), root, "iris", report,
                              Webhook(rec.url, "t"), few)
    assert rec.got == [] and report["alerts"]["opened"] == []
    assert "7 labelled record(s), too few for a verdict" in "\n".join(lines)
    assert stages(root)[2] == "production"


def test_from_online_reads_the_online_quality_verdicts(root):
    from types import SimpleNamespace as NS

    def metric(value, floor=None, allowed=None):
        return NS(value=value, floor=floor, allowed=allowed)

    online = {2: NS(labelled=400, enough=True, below_floor=True,
                    metrics={"accuracy": metric(0.6, floor=0.8), "f1": metric(0.5, allowed=0.7),
                             "rmse": metric(None)}),
              1: NS(labelled=3, enough=False, below_floor=False, metrics={})}
    quality = rb.from_online(online)
    assert quality[2] == rb.QualityInput(2, 400, True, True, {"accuracy": 0.6, "f1": 0.5},
                                         {"accuracy": 0.8, "f1": 0.7}, rb.ERROR_METRICS)
    assert (quality[1].enough, quality[1].floors) == (False, {})
    # v1's offline metrics have accuracy (0.9 > 0.8), not f1: judged on what it has
    d = decide(reg_of(root), "iris", rb.from_online({2: online[2]}))
    assert d.rollback and "accuracy 0.9 vs floor 0.8; no f1" in d.reason


def test_a_refused_webhook_file_stops_a_rollback_before_anything_moves(root, tmp_path,
                                                                       monkeypatch, capsys):
    hook = tmp_path / "hook"
    hook.write_text("https://hooks.example.com/services/SECRET")
    hook.chmod(0o640)
    monkeypatch.setenv("MLOPS_NB_ALERT_WEBHOOK_FILE", str(hook))
    assert main(["-C", str(root), "models", "rollback", "iris"]) == 3
    err = capsys.readouterr().err
    assert "chmod 600" in err and "SECRET" not in err
    assert stages(root) == {1: "archived", 2: "production", 3: "candidate"}
    assert LineageStore(default_path(root)).events() == []
