"""Careless and hostile configs (issue 15): the loader and the validation are bounded, strict
and literal, and every refusal is one line naming the file and the key. These run the real
loader and validation in-process (fast); tests/test_bad_input.py runs the same refusals through
real Snakemake and the real `covpipe` command."""

import math
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers import mini_config

from covpipe import strict_yaml
from covpipe.config import ConfigError, load_config, validate_config

COVPIPE = [sys.executable, "-m", "covpipe.cli"]
# Runs a command and prints its exit code and peak memory (KiB). From a small launcher: on Linux a
# child's ru_maxrss counts the memory of the process it was forked from, and the test process may
# be large by the time this runs (torch and models loaded by earlier tests).
PEAK = """import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def mini_yaml(**changes) -> str:
    return yaml.safe_dump(mini_config(**changes), sort_keys=False)


def refused(tmp_path, text) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    message = exc.value.args[0]
    assert "\n" not in message and len(message) < 400, message
    return message


# ---- class 4: YAML that means something other than it says -----------------------------------

MINI = mini_yaml()
STUDY = "studies:\n  mini:\n"

YAML_CASES = [
    (
        "duplicate top-level key",
        MINI + "execution: {backend: ray}\n",
        r"c.yaml: line \d+: execution: duplicate key \(also on line 1\)",
    ),
    ("duplicate study (a whole study would vanish)", MINI + "studies: {}\n", r"line \d+: studies: duplicate key"),
    (
        "duplicate key deep inside",
        MINI.replace("      order: 1\n", "      order: 1\n      order: 2\n", 1),
        r"line \d+: order: duplicate key",
    ),
    (
        "duplicate key in a flow mapping",
        MINI.replace("data:\n      n_train: 32\n", "data: {n_train: 4, n_train: 8}\n    x:\n"),
        r"n_train: duplicate key",
    ),
    ("octal-looking integer", MINI.replace("seeds: 2", "seeds: 010"), r"line \d+: 010: an integer with a leading zero"),
    ("octal-looking integer in a list", MINI.replace("- 4\n", "- 04\n", 1), r"04: an integer with a leading zero"),
    (
        "yes as a boolean",
        MINI.replace("n_eval: 64", "n_eval: 64\n      shared_across_seeds: yes"),
        r"studies\.mini\.data\.shared_across_seeds: Input should be a valid boolean, got yes",
    ),
    (
        "true as a number",
        MINI.replace("seeds: 2", "seeds: true"),
        r"studies\.mini\.seeds: Input should be a valid integer, got True",
    ),
    (
        "false as a number in a model",
        MINI.replace("hidden: 4", "hidden: false"),
        r"studies\.mini\.models\.gru\.hidden: Input should be a valid integer, got False",
    ),
    ("quoted number", MINI.replace("seeds: 2", "seeds: '2'"), r"studies\.mini\.seeds: Input should be a valid integer"),
    (
        "float for an integer",
        MINI.replace("seeds: 2", "seeds: 2.0"),
        r"studies\.mini\.seeds: Input should be a valid integer",
    ),
    (
        "sexagesimal",
        MINI.replace("seeds: 2", "seeds: 1:30"),
        r"studies\.mini\.seeds: Input should be a valid integer, got 1:30",
    ),
    (
        "python tag",
        MINI + "x: !!python/object/apply:os.system ['true']\n",
        r"c.yaml: not valid YAML: could not determine a constructor",
    ),
    ("yte templating header", "__use_yte__: true\n" + MINI, r"c.yaml: __use_yte__: unknown top-level key"),
    ("not UTF-8", MINI.encode() + b"# \xff\xfe\n", r"c.yaml: not UTF-8 text \(byte 0xff at offset \d+\)"),
    ("not a mapping", "- 1\n- 2\n", r"c.yaml: expected a mapping at the top level, got list"),
    (
        "non-string key",
        MINI.replace("seeds: 2", "seeds: 2\n    1: x"),
        r"studies\.mini\.1: keys must be strings, got int",
    ),
]


@pytest.mark.parametrize("text,message", [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_yaml_that_says_something_else_is_refused(tmp_path, text, message):
    assert __import__("re").search(message, refused(tmp_path, text))


def test_merge_keys_and_anchors_still_work(tmp_path):
    text = MINI.replace("  mini:\n", "  mini: &base\n", 1) + "  other:\n    <<: *base\n    seeds: 3\n"
    cfg = load_config(write(tmp_path, text.replace("studies:\n", "studies:\n", 1)))
    assert cfg["studies"]["other"]["seeds"] == 3 and cfg["studies"]["mini"]["seeds"] == 2
    assert cfg["studies"]["other"]["horizons"] == [2, 4]


def test_yaml_1_2_scalars(tmp_path):
    assert strict_yaml.loads(b"a: 1e6\nb: yes\nc: 0x10\nd: 1_000\ne: ~\n") == {
        "a": 1e6,
        "b": "yes",
        "c": 16,
        "d": "1_000",
        "e": None,
    }


# ---- class 1: validation whose cost would grow with the input ---------------------------------


def alias_bomb(levels=9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nstudies: {{mini: {{horizons: *a{levels - 1:d}}}}}\n"


HUGE = [
    ("alias bomb", alias_bomb(), r"c.yaml: expands to more than 100000 values"),
    ("recursive alias", "studies: &s {mini: *s}\n", r"c.yaml: line 1: an alias refers to a value that contains it"),
    ("deep nesting", "studies: " + "[" * 3000 + "]" * 3000 + "\n", r"c.yaml: nested deeper than 64 levels"),
    ("deep but short nesting", "studies: " + "[" * 80 + "]" * 80 + "\n", r"nested deeper than 64 levels"),
    (
        "oversized file",
        MINI + "# " + "x" * (2 << 20) + "\n",
        r"c.yaml: \d+ bytes; a config file is at most 1048576 bytes",
    ),
]


@pytest.mark.parametrize("text,message", [c[1:] for c in HUGE], ids=[c[0] for c in HUGE])
def test_oversized_documents_are_refused_in_bounded_time_and_memory(tmp_path, text, message):
    path = write(tmp_path, text)
    stderr = tmp_path / "stderr"
    started = time.monotonic()
    with open(stderr, "w") as err:
        measured = subprocess.run(
            [sys.executable, "-c", PEAK, *COVPIPE, "check", str(path)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=60,
        )
    elapsed = time.monotonic() - started
    returncode, peak_kib = map(int, measured.stdout.split())
    out = stderr.read_text()
    lines = [line for line in out.splitlines() if line.startswith("covpipe:")]
    assert returncode == 2 and len(lines) == 1 and "Traceback" not in out, out[-2000:]
    assert __import__("re").search(message, lines[0]), lines[0]
    assert len(lines[0]) < 300  # never the whole input in a message
    assert elapsed < 10
    assert peak_kib < 1 << 20  # the checking process stayed under 1 GiB


def test_a_huge_value_is_never_printed_whole():
    cfg = mini_config(horizons=list(range(1, 100_000)))
    cfg["studies"]["mini"]["teacher"] = {"name": "markov", "vocab_size": "v" * 100_000}
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg, source="c.yaml")
    assert len(exc.value.args[0]) < 300 and "teacher.vocab_size" in exc.value.args[0]
    with pytest.raises(ConfigError) as exc:
        validate_config({"studies": {"x" * 100_000: {}}}, source="c.yaml")
    assert len(exc.value.args[0]) < 300


# ---- class 2: sizes without limits ----------------------------------------------------------


def with_execution(**execution):
    cfg = mini_config()
    cfg["execution"] = {"backend": "serial", **execution}
    return cfg


LIMIT = r"; the limit is [\d.e+]+ GiB \(execution\.memory_gb"
SIZES = [
    (
        "horizon 1e9",
        mini_config(horizons=[2, 10**9], models={"g": {"class": "gru"}}),
        r"studies\.mini\.horizons: the data job at horizon 1000000000 would need about .* GiB, mostly teacher log-probs",
    ),
    (
        "transformer at horizon 1e6",
        mini_config(horizons=[2, 10**6], models={"t": {"class": "transformer"}}),
        r"studies\.mini\.horizons: the train job at horizon 1000000 would need about",
    ),
    ("n_eval 1e12", mini_config(data={"n_train": 32, "n_eval": 10**12}), r"studies\.mini\.data\.n_eval: the data job"),
    (
        "n_train 1e10",
        mini_config(data={"n_train": 10**10, "n_eval": 64}),
        r"studies\.mini\.data\.n_train: the data job",
    ),
    ("seeds 1e9", mini_config(seeds=10**9), r"studies\.mini\.seeds: the data job"),
    (
        "batch size 1e9",
        mini_config(train={"batch_size": 10**9}),
        r"studies\.mini\.train\.batch_size: the train job at horizon 2 would need about",
    ),
    (
        "a model's own batch size",
        mini_config(models={"g": {"class": "gru", "train": {"batch_size": 10**8}}}),
        r"studies\.mini\.models\.g\.train\.batch_size: the train job",
    ),
    (
        "gru hidden 1e6",
        mini_config(models={"g": {"class": "gru", "hidden": 10**6}}),
        r"studies\.mini\.models\.g: the train job at horizon 2 would need about .* mostly model parameters",
    ),
    (
        "transformer width 2^20",
        mini_config(models={"t": {"class": "transformer", "width": 2**20}}),
        r"studies\.mini\.models\.t: the train job",
    ),
    (
        "teacher dimension 1e9",
        mini_config(teacher={"name": "ar_linear", "dim": 10**9}),
        r"studies\.mini\.teacher: building this teacher needs about 4e\+02 GiB; the limit is",
    ),
    (
        "model feature dimension 1e9",
        mini_config(models={"a": {"class": "ar_linear", "dim": 10**9}}),
        r"studies\.mini\.models\.a: building this model at horizon 2 needs about",
    ),
    (
        "a limit the mini study exceeds",
        with_execution(memory_gb=1e-5),
        r"studies\.mini\.data\.n_train: the data job at horizon 2 would need about 1.7e-05 GiB, mostly teacher log-probs: "
        r".*; the limit is 1e-05 GiB \(execution\.memory_gb\)$",
    ),
    ("zero limit", with_execution(memory_gb=0), r"execution\.memory_gb: Input should be greater than 0, got 0"),
]


@pytest.mark.parametrize("cfg,message", [c[1:] for c in SIZES], ids=[c[0] for c in SIZES])
def test_a_study_that_would_not_fit_is_refused_naming_key_and_estimate(cfg, message):
    started = time.monotonic()
    with pytest.raises(ConfigError, match=message) as exc:
        validate_config(cfg, source="c.yaml")
    assert time.monotonic() - started < 10 and "\n" not in exc.value.args[0]
    if "limit is" not in message and "memory_gb: Input" not in message:
        assert __import__("re").search(LIMIT, exc.value.args[0])


def test_the_default_studies_fit_and_a_larger_limit_admits_more():
    root = Path(__file__).parents[1]
    load_config(root / "config" / "config.yaml")
    big = mini_config(data={"n_train": 32, "n_eval": 10**7})
    with pytest.raises(ConfigError, match=r"data\.n_eval"):
        validate_config({**big, "execution": {"backend": "serial", "memory_gb": 1}})
    validate_config({**big, "execution": {"backend": "serial", "memory_gb": 10_000}})


# ---- class 3: names ---------------------------------------------------------------------------


def renamed(study=None, model=None, classes=None):
    cfg = mini_config()
    if model is not None:
        cfg["studies"]["mini"]["models"] = {model: {"class": "gru"}}
    if classes is not None:
        cfg["studies"]["mini"]["teacher"]["classes"] = classes
    if study is not None:
        cfg["studies"] = {study: cfg["studies"]["mini"]}
    return cfg


NAMES = [
    ("study name with a trailing newline", renamed(study="mini\n"), r"studies\.'mini\\n': names must match"),
    (
        "model name with a trailing newline",
        renamed(model="gru\n"),
        r"studies\.mini\.models\.'gru\\n': names must match",
    ),
    (
        "model name too long",
        renamed(model="m" * 65),
        r"studies\.mini\.models\.m+\.\.\.: names must match .* at most 64",
    ),
    ("model name with a slash", renamed(model="a/b"), r"studies\.mini\.models\.a/b: names must match"),
    ("model name with a tilde", renamed(model="a~b"), r"names must match"),
    ("model name starting with a digit", renamed(model="1gru"), r"names must match"),
    ("non-ASCII study name", renamed(study="mïni"), r"studies\.mïni: names must match"),
    ("empty model name", renamed(model=""), r"studies\.mini\.models\.: names must match"),
    (
        "class named like covpipe's mixture label",
        renamed(classes={"all": 0.5, "b": 0.5}),
        r"studies\.mini\.teacher\.classes\.all: 'all' is a label covpipe writes itself; choose another name",
    ),
    (
        "class name with a space",
        renamed(classes={"a b": 0.5, "b": 0.5}),
        r"studies\.mini\.teacher\.classes\.a b: class names must match",
    ),
]


@pytest.mark.parametrize("cfg,message", [c[1:] for c in NAMES], ids=[c[0] for c in NAMES])
def test_names_full_match_have_a_length_limit_and_never_collide(cfg, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, source="c.yaml")


def test_a_64_character_name_is_fine():
    validate_config(renamed(model="m" * 64))


# ---- class 5: values that pass the schema and fail later --------------------------------------

NONFINITE = [
    ("nan teacher alpha", mini_config(teacher={"name": "markov", "alpha": math.nan}), r"studies\.mini\.teacher\.alpha"),
    (
        "inf teacher scale",
        mini_config(teacher={"name": "ar_linear", "scale": math.inf}),
        r"studies\.mini\.teacher\.scale",
    ),
    (
        "inf class weight",
        mini_config(teacher={"name": "markov", "classes": {"a": math.inf}}),
        r"studies\.mini\.teacher\.classes\.a",
    ),
    (
        "nan model smoothing",
        mini_config(models={"t": {"class": "ngram", "smoothing": math.nan}}),
        r"studies\.mini\.models\.t\.smoothing",
    ),
    (
        "-inf model scale",
        mini_config(models={"a": {"class": "ar_linear", "scale": -math.inf}}),
        r"studies\.mini\.models\.a\.scale",
    ),
    (
        "nan learner eta",
        mini_config(
            teacher={"name": "ar_linear"},
            models={"a": {"class": "ar_linear", "learner": {"name": "adam", "eta": math.nan}}},
        ),
        r"studies\.mini\.models\.a\.learner\.eta",
    ),
    ("inf level", mini_config(evaluate={"levels": [2, math.inf]}), r"studies\.mini\.evaluate\.levels\[1\]"),
    (
        "nan in a finetune teacher",
        mini_config(finetune={"teacher": {"alpha": math.nan}, "train": {}}),
        r"studies\.mini\.finetune\.teacher\.alpha",
    ),
]


@pytest.mark.parametrize("cfg,message", [c[1:] for c in NONFINITE], ids=[c[0] for c in NONFINITE])
def test_non_finite_numbers_are_refused_in_every_section(cfg, message):
    with pytest.raises(ConfigError, match=message + r": Input should be a finite number, got (nan|inf|-inf)$"):
        validate_config(cfg, source="c.yaml")


def test_selection_on_a_teacher_without_a_reward_is_refused():
    with pytest.raises(
        ConfigError,
        match=r"c.yaml: studies\.mini: selection: teacher 'markov' has no notion of a "
        r"correct response",
    ):
        validate_config(mini_config(selection={}), source="c.yaml")


@pytest.fixture
def no_ray_cluster(monkeypatch, tmp_path):
    """No RAY_ADDRESS and no record of a cluster on this machine (whatever other users run)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers, like a hung or foreign service."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "address,message",
    [
        ("http://head:6379", r"'http://head:6379': expected 'local', 'run', 'auto' or host:port of a Ray cluster"),
        ("head", r"'head': expected 'local', 'run', 'auto' or host:port"),
        ("head:99999", r"'head:99999': expected"),
        ("head:6379; rm -rf /", r"'head:6379; rm -rf /': expected 'local', 'run', 'auto' or host:port"),
        ("auto", r"'auto' but RAY_ADDRESS is unset and no Ray cluster runs on this machine"),
        ("no-such-host.invalid:6379", r"no-such-host.invalid:6379: no Ray cluster answers there"),
    ],
)
def test_a_malformed_or_unreachable_ray_address_is_refused(no_ray_cluster, address, message):
    for backend in ("ray", "auto"):
        with pytest.raises(ConfigError, match=r"c.yaml: execution\.ray_address: " + message):
            validate_config(with_execution(backend=backend, ray_address=address), source="c.yaml")
    validate_config(with_execution(backend="serial", ray_address="local"))


@pytest.mark.workflow
def test_an_unreachable_ray_cluster_is_refused_within_seconds(no_ray_cluster, silent_port):
    for address, message in (
        (f"127.0.0.1:{closed_port()}", "no Ray cluster answers there"),
        (f"127.0.0.1:{silent_port}", "something listens there but it is not a Ray cluster"),
    ):
        started = time.monotonic()
        with pytest.raises(ConfigError, match=r"execution\.ray_address: .*" + message):
            validate_config(with_execution(backend="ray", ray_address=address), source="c.yaml")
        assert time.monotonic() - started < 5


# ---- class 7: messages ----------------------------------------------------------------------


def test_a_config_path_that_is_a_directory_names_it(tmp_path):
    with pytest.raises(ConfigError, match=r": not a file$"):
        load_config(tmp_path)


def test_an_override_is_blamed_not_the_file(tmp_path):
    path = write(tmp_path, MINI)
    with pytest.raises(ConfigError, match=r"^--config: execution\.backend: Input should be 'auto', 'serial' or 'ray'"):
        load_config(path, overrides={"execution": {"backend": "dask"}})
    with pytest.raises(ConfigError, match=r"^.*d.yaml: line \d+: seeds: duplicate key"):
        load_config(write(tmp_path, MINI.replace("seeds: 2", "seeds: 2\n    seeds: 3"), "d.yaml"), overrides={"x": 1})
    assert load_config(path, overrides={"execution": {"backend": "serial"}})["execution"]["backend"] == "serial"


# ---- property: any mutant of the default config is accepted whole, or refused in one line -----

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from covpipe.config import NAME  # noqa: E402

DEFAULT = Path(__file__).parents[1] / "config" / "config.yaml"


def _paths(node, prefix=()):
    """Every (path, value) below node: mapping entries and list items."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield prefix + (key,), value
        yield from _paths(value, prefix + (key,))


def _parent(root, path):
    for key in path[:-1]:
        root = root[key]
    return root


@st.composite
def mutants(draw):
    """(text of a mutated default config, what was done)."""
    import copy

    raw = strict_yaml.load(DEFAULT)
    cfg = copy.deepcopy(raw)
    paths = sorted(_paths(cfg), key=lambda p: [str(k) for k in p[0]])
    path, value = draw(st.sampled_from(paths))
    parent, key = _parent(cfg, path), path[-1]
    op = draw(st.sampled_from(["delete", "duplicate", "retype", "scale", "rename"]))
    if op == "delete":
        del parent[key]
    elif op == "retype":
        parent[key] = draw(st.sampled_from(["x", True, None, [], {}, 1.5, -1, 0, "8", [1, 2]]))
    elif op == "scale":
        k = draw(st.integers(-3, 12))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            parent[key] = value
        else:
            parent[key] = value * 10**k if isinstance(value, int) and k >= 0 else value * 10.0**k
    elif op == "rename" and isinstance(parent, dict):
        parent[draw(st.sampled_from([f"{key}x", str(key).upper(), f"{key}\n", "all", "a" * 70]))] = parent.pop(key)
    text = yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False, width=10_000)
    if op == "duplicate":
        lines = text.splitlines()
        keyed = [i for i, line in enumerate(lines) if re.match(r"^ *[A-Za-z_][\w]*: \S", line)]
        i = draw(st.sampled_from(keyed))
        lines.insert(i + 1, lines[i])
        text = "\n".join(lines) + "\n"
    return text, f"{op} {'.'.join(map(str, path))}"


import re  # noqa: E402


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(mutants())
def test_every_mutant_of_the_default_config_is_accepted_whole_or_refused_in_one_line(tmp_path_factory, mutant):
    text, what = mutant
    path = tmp_path_factory.mktemp("mutant") / "config.yaml"
    path.write_text(text)
    start_rss = _reset_peak_rss()
    started = time.monotonic()
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        message = exc.args[0]
        assert "\n" not in message and len(message) < 400 and message.startswith(str(path)), (what, message)
    else:
        raw = strict_yaml.load(path)
        assert set(cfg["studies"]) == set(raw["studies"]), what
        for name, study in cfg["studies"].items():  # every configured cell is there, under a path-safe name
            assert NAME.fullmatch(name) and set(study["models"]) == set(raw["studies"][name]["models"]), what
            assert all(NAME.fullmatch(m) for m in study["models"]), what
            assert study["horizons"] == raw["studies"][name]["horizons"], what
    assert time.monotonic() - started < 10, what
    if start_rss is not None:  # the process grew by less than 1 GiB while validating this mutant
        assert _peak_rss() - start_rss < 1 << 30, what
    else:
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 1 << 20, what  # KiB


def _status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak_rss():
    """Reset this process's peak RSS (Linux: clear_refs 5) and return the current RSS in bytes,
    or None where the peak cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return None


def _peak_rss():
    return _status_kib("VmHWM") * 1024


def test_an_override_may_complete_what_the_files_alone_lack(tmp_path):
    # profiles/slurm passes `execution={device_check: in_jobs}` with --config: a cuda study then
    # validates on a login node without GPU; the files alone would be refused there.
    import torch

    from covpipe.config import ConfigError, load_config

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU: device: cuda is valid here with or without the override")
    path = tmp_path / "c.yaml"
    path.write_text(
        "execution: {device: cuda}\nstudies:\n  s:\n    teacher: {name: markov, vocab_size: 4, order: 1}\n"
        "    horizons: [4]\n    seeds: 1\n    models: {m: {class: ngram}}\n"
    )
    with pytest.raises(ConfigError, match=r"c\.yaml: execution\.device: 'cuda' requested but torch sees no GPU"):
        load_config(path)
    cfg = load_config(path, overrides={"execution": {"device_check": "in_jobs"}})
    assert cfg["execution"]["device"] == "cuda"
