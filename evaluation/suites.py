"""Evaluation suites: each loads a list of problems with reference answers (docs/method.md §8).

| suite | problems | default source (hub id, config, split) | local file (`--data-dir`) | reference |
|---|---|---|---|---|
| aime24 | 30 | HuggingFaceH4/aime_2024, train | aime24.jsonl | `answer` |
| aime25 | 30 | math-ai/aime25, test | aime25.jsonl | `answer` |
| amc | 83 | AI-MO/aimo-validation-amc, train | amc83.jsonl | `answer` (142.0 -> 142) |
| amc23 | 40 | math-ai/amc23, test | amc23.jsonl | `answer` |
| math500 | 500 | HuggingFaceH4/MATH-500, test | math500.jsonl | `answer` |
| minerva | 272 | math-ai/minervamath, test | minerva_math.jsonl | `answer`, else the last `\\boxed{}` of `solution` |
| olympiadbench | 675 | Hothan/OlympiadBench, OE_TO_maths_en_COMP, train | olympiadbench.jsonl | `final_answer[0]`, `$` removed |
| arc_c | 1,172 | allenai/ai2_arc, ARC-Challenge, test | arc_challenge.parquet, valid.arc_c.parquet | `answerKey` / `reward_model.ground_truth` |
| gpqa_diamond | 198 | Idavidrein/gpqa, gpqa_diamond, train (gated) | gpqa_diamond.parquet, valid.gpqa.parquet | the correct option's letter |
| mmlu_pro | 12,032 | TIGER-Lab/MMLU-Pro, test | mmlu_pro_test.parquet, valid.mmlu_pro.parquet | `answer` (A-J) |
| toy | 527 | the embedded task's held-out split (up to 100 distinct problems per level 1-6; level 1 has fewer) | - | the task's answer |
| toy_val | 200 | the embedded task's validation split (test-partition problems outside `toy`, 40 per level 2-6) | - | the task's answer |
| countdown | 431 | the embedded Countdown task's held-out split (up to 100 per level 1-5; level 1 has fewer) | - | `countdown:<target>:<numbers>` |
| countdown_val | 160 | Countdown validation split (outside `countdown`, 40 per level 2-5) | - | `countdown:<target>:<numbers>` |

Groups: `math` = the six benchmarks of the paper's headline (aime24, aime25, amc, math500, minerva,
olympiadbench); `general` = arc_c, gpqa_diamond, mmlu_pro. `amc23` is the 40-problem AMC 2023 set, not
the 83-problem AMC 2022+2023 set the paper reports as "AMC".

Local files are found as `<data-dir>/eval/<file>` or `<data-dir>/<file>` (the layout of data);
each adapter recognises the raw layout and LUFFY's verl layout (`prompt` messages + `reward_model`).
OlympiadBench multi-answer rows keep the whole comma-separated list as one reference (math-verify
compares it as a set, order-free). GPQA rows from the raw hub set get their options shuffled with a
seed derived from the question (LUFFY's copy has its own shuffle). GPQA questions are never logged.

Protocols (`eval.protocol`, evaluation/protocols.py): `ours` loads each suite's own copy as above;
`paper` and `luffy` read the six math benchmarks from LUFFY's `valid.all.parquet` (user turn only: its
system turn is dropped; AIME/AMC rows repeated x32 become 32 samples of one problem) and ARC-c / GPQA from
LUFFY's `valid.arc_c` / `valid.gpqa` parquets (`--data-dir` copies, else downloaded), keeping their system
prompt under `paper` and dropping it under `luffy`. MMLU-Pro, whose LUFFY copy is not public, is rendered
with our template under every protocol. Raw GPQA rows get the header LUFFY's copy carries.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from evaluation.choice import LETTERS, LUFFY_SYSTEM_PROMPT, canonical, format_choices, parse_choices
from evaluation.protocols import PROTOCOLS, Protocol
from pipeline.datafiles import MISSING, get_path, read_hub, read_records, reference_text
from pipeline.errors import UserError
from pipeline.rewards import last_boxed

LUFFY_VALID_ALL = ("https://raw.githubusercontent.com/ElliottYan/LUFFY/01f4ae066249e6965ce0d5512ccdf99a12895c74/"
                   "data/valid.all.parquet")
LUFFY_FILES = ("luffy_valid_all.parquet", "valid.all.parquet")
LUFFY_CHOICE = {"arc_c": "valid.arc_c.parquet", "gpqa_diamond": "valid.gpqa.parquet"}  # at LUFFY_VALID_ALL's commit
GPQA_HEADER = ("Answer the following multiple choice question. The last line of your response should be of the "
               "following format: 'ANSWER: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by "
               "step before answering.")  # the first line of every user turn of LUFFY's valid.gpqa
LUFFY_SOURCES = {"aime": "aime24", "aime25": "aime25", "amc": "amc", "math": "math500", "minerva": "minerva",
                 "olympiad_bench": "olympiadbench"}


@dataclass(frozen=True)
class EvalItem:
    id: str
    problem: str  # the user-turn text before any instruction
    answer: str  # reference: a math answer, or the positional letter (A, B, ...) of a choice item
    level: int = -1  # difficulty level where the suite has one
    system_prompt: str | None = None  # the item's system turn; None: no system turn
    instruct: bool = True  # append the protocol's instruction to the user turn
    labels: tuple[str, ...] = ()  # choice items: option labels as shown (A-J, or ARC's 1-4)
    options: tuple[str, ...] = ()  # choice items: option texts
    question: str = ""  # problem text without the options ("" = `problem`), for decontamination
    samples: int = 0  # replicas in the source file (LUFFY x32); 0: the suite's default


@dataclass(frozen=True)
class Suite:
    name: str
    grader: str  # "math" (math-verify on the last \boxed{}) or "choice" (option letter)
    description: str
    adapter: Callable[[str, dict[str, Any], int], EvalItem] | None = None  # (suite, row, index) -> item
    hub: tuple[str, str | None, str] | None = None  # (dataset id, config, split)
    files: tuple[str, ...] = ()
    paper_samples: int = 1  # samples per problem from the suite's own copy (avg@32 for AIME/AMC)
    loader: Callable[[str | None], list[EvalItem]] | None = field(default=None, compare=False)

    def load(self, data_dir: str | None = None, protocol: str = "ours") -> list[EvalItem]:
        """The suite's items under `protocol`, from `data_dir` when given, else from its default source."""
        if protocol not in PROTOCOLS:
            raise UserError(f"eval.protocol: unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        return list(_load_cached(self.name, data_dir, protocol))


# ---------------------------------------------------------------------------------------------------
# reference answers


def _first(row: dict[str, Any], paths: tuple[str, ...]) -> Any:
    for p in paths:
        v = get_path(row, p)
        if v is not MISSING and v is not None:
            return v
    return MISSING


def _row_id(suite: str, row: dict[str, Any], index: int) -> str:
    native = _first(row, ("unique_id", "id", "idx", "question_id", "ID", "Record ID"))
    return f"{suite}-{native if native is not MISSING else index}"


def _problem_text(suite: str, row: dict[str, Any], index: int) -> str:
    text = _first(row, ("problem", "question", "Question"))
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{suite}: row {index} has no problem text (columns problem/question)")
    context = row.get("context")
    return f"{context}\n{text}" if isinstance(context, str) and context.strip() else text


def _math_item(suite: str, row: dict[str, Any], index: int, answer: str | None, level: int = -1) -> EvalItem:
    if answer is None:
        raise UserError(f"{suite}: row {index} has no reference answer")
    return EvalItem(_row_id(suite, row, index), _problem_text(suite, row, index), answer, level)


def math_answer(suite: str, row: dict[str, Any], index: int) -> EvalItem:
    """Rows with the reference in `answer` (AIME, AMC, MATH-500); `level` kept where it is an int."""
    level = row.get("level")
    return _math_item(suite, row, index, reference_text(_first(row, ("answer", "Answer"))),
                      level if isinstance(level, int) and not isinstance(level, bool) else -1)


def minerva_answer(suite: str, row: dict[str, Any], index: int) -> EvalItem:
    """Minerva: `answer` where the copy has one, else the last `\\boxed{}` of `solution`."""
    ref = reference_text(row.get("answer"))
    if ref is None and isinstance(row.get("solution"), str):
        ref = reference_text(last_boxed(row["solution"]))
    return _math_item(suite, row, index, ref)


def olympiad_answer(suite: str, row: dict[str, Any], index: int) -> EvalItem:
    """OlympiadBench: `final_answer[0]` with its `$` delimiters removed ("$69$,$84$" -> "69,84")."""
    ref = reference_text(_first(row, ("final_answer", "answer")))
    return _math_item(suite, row, index, ref.replace("$", "").strip() if ref else None)


def choice_item(suite: str, row: dict[str, Any], index: int) -> EvalItem:
    """A multiple-choice row in LUFFY's layout, ai2_arc's, GPQA's raw one, or MMLU-Pro's."""
    if isinstance(row.get("prompt"), list):  # LUFFY / verl: prompt messages + reward_model.ground_truth
        msgs = row["prompt"]
        system = next((m["content"] for m in msgs if m.get("role") == "system"), None)
        user = next((m["content"] for m in reversed(msgs) if m.get("role") == "user"), "")
        parsed = parse_choices(user)
        if parsed is None:
            raise UserError(f"{suite}: row {index}: the user turn has no `A) ...` option lines")
        stem, labels, options = parsed
        return _choice(suite, row, index, user, stem, labels, options,
                       str(get_path(row, "reward_model.ground_truth")), system)
    if isinstance(row.get("choices"), dict):  # allenai/ai2_arc
        labels, options = list(row["choices"]["label"]), list(row["choices"]["text"])
        q = row["question"]
        return _choice(suite, row, index, format_choices(q, options, labels), q, labels, options,
                       str(row.get("answerKey")))
    if "Correct Answer" in row:  # Idavidrein/gpqa: shuffle the four options, seeded by the question
        q = row["Question"].strip()
        options = [row["Correct Answer"]] + [row[f"Incorrect Answer {i}"] for i in (1, 2, 3)]
        options = [str(o).strip() for o in options]
        order = list(range(4))
        random.Random(hashlib.sha256(q.encode()).hexdigest()).shuffle(order)
        shuffled = [options[i] for i in order]
        letter = LETTERS[order.index(0)]
        return _choice(suite, row, index, GPQA_HEADER + "\n\n" + format_choices(q, shuffled), q, list(LETTERS[:4]),
                       shuffled, letter)
    if isinstance(row.get("options"), list):  # TIGER-Lab/MMLU-Pro raw layout
        options = [str(o) for o in row["options"]]
        labels = list(LETTERS[:len(options)])
        ref = row.get("answer")
        if not isinstance(ref, str) and isinstance(row.get("answer_index"), int):
            ref = LETTERS[row["answer_index"]]
        return _choice(suite, row, index, format_choices(row["question"], options), row["question"], labels,
                       options, str(ref))
    raise UserError(f"{suite}: row {index} is in no known multiple-choice layout (LUFFY prompt/reward_model, "
                    "ai2_arc question/choices/answerKey, GPQA Question/Correct Answer, MMLU-Pro question/options)")


def _choice(suite: str, row: dict[str, Any], index: int, text: str, stem: str, labels: list[str],
            options: list[str], reference: str, system: str | None = LUFFY_SYSTEM_PROMPT) -> EvalItem:
    letter = canonical(reference.strip(), labels)
    if letter is None:  # never echo the row: GPQA text must not reach logs
        raise UserError(f"{suite}: row {index}: reference {reference!r} names none of its {len(labels)} options")
    return EvalItem(_row_id(suite, row, index), text, letter, system_prompt=system, instruct=False,
                    labels=tuple(labels), options=tuple(options), question=stem)


# ---------------------------------------------------------------------------------------------------
# loading


def _load_toy(data_dir: str | None) -> list[EvalItem]:
    from pipeline.embedded import task

    return [EvalItem(task.problem_id(p), p.text, str(p.answer), p.level)
            for p in task.test_split(list(range(1, 7)), 100)]


def _load_embedded(module: str, split: str, levels: list[int]) -> Callable[[str | None], list[EvalItem]]:
    def load(data_dir: str | None) -> list[EvalItem]:
        import importlib

        mod = importlib.import_module(f"pipeline.embedded.{module}")
        return [EvalItem(mod.problem_id(p), p.text, str(p.answer), p.level) for p in getattr(mod, split)(levels)]

    return load


def find_local(data_dir: str, names: tuple[str, ...], what: str) -> Path:
    """`<data_dir>/eval/<name>` or `<data_dir>/<name>` for the first name that exists."""
    for name in names:
        for base in (Path(data_dir) / "eval", Path(data_dir)):
            if (base / name).exists():
                return base / name
    raise UserError(f"{what}: none of {', '.join(names)} found in {data_dir} or {Path(data_dir) / 'eval'} "
                    "(--data-dir / eval.data_dir); drop the option to load it from the hub")


def _rows(suite: Suite, data_dir: str | None) -> list[dict[str, Any]]:
    if data_dir:
        path = find_local(data_dir, suite.files, f"suite {suite.name}")
        rows = read_records(path)
        if any(r is None for r in rows):
            raise UserError(f"{path}: some lines are not JSON objects")
        return rows  # type: ignore[return-value]
    assert suite.hub is not None
    return read_hub(*suite.hub)


def _luffy_rows(data_dir: str | None, files: tuple[str, ...], url: str, what: str) -> list[dict[str, Any]]:
    if data_dir:
        return read_records(find_local(data_dir, files, what))  # type: ignore[return-value]
    from datasets import load_dataset

    try:
        return load_dataset("parquet", data_files=url, split="train").to_list()
    except Exception as e:
        raise UserError(f"{what}: could not download {url} ({type(e).__name__}); pass --data-dir with "
                        f"{files[0]}") from None


def _luffy_items(suite: str, data_dir: str | None, protocol: Protocol) -> list[EvalItem]:
    """The suite's user turns of LUFFY's valid.all.parquet (system turn dropped, as both references
    do); replicas grouped into one problem."""
    rows = _luffy_rows(data_dir, LUFFY_FILES, LUFFY_VALID_ALL, f"protocol {protocol.name}")
    source = {v: k for k, v in LUFFY_SOURCES.items()}[suite]
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r and r.get("data_source") == source:
            groups.setdefault(r["prompt"][-1]["content"], []).append(i)
    items = []
    for user, idx in groups.items():
        row = rows[idx[0]]
        ref = reference_text(get_path(row, "reward_model.ground_truth"))
        if ref is None:
            raise UserError(f"protocol luffy: {suite} row {idx[0]} has no reward_model.ground_truth")
        items.append(EvalItem(f"{suite}-{idx[0]}", user, ref, instruct=protocol.instruction is not None,
                              samples=len(idx)))
    if not items:
        raise UserError(f"protocol {protocol.name}: LUFFY's valid.all has no rows with data_source {source!r}")
    return items


def _luffy_choice_rows(suite: Suite, data_dir: str | None, protocol: Protocol) -> list[dict[str, Any]]:
    name = LUFFY_CHOICE[suite.name]
    url = LUFFY_VALID_ALL.rsplit("/", 1)[0] + "/" + name
    return _luffy_rows(data_dir, suite.files, url, f"protocol {protocol.name}: suite {suite.name}")


@functools.lru_cache(maxsize=32)
def _load_cached(name: str, data_dir: str | None, protocol: str) -> tuple[EvalItem, ...]:
    suite = SUITES[name]
    if suite.loader is not None:
        return tuple(suite.loader(data_dir))
    proto = PROTOCOLS[protocol]
    if proto.math_source == "valid_all" and name in LUFFY_SOURCES.values():
        return tuple(_luffy_items(name, data_dir, proto))
    assert suite.adapter is not None
    rows = (_luffy_choice_rows(suite, data_dir, proto) if proto.choice_source == "luffy" and name in LUFFY_CHOICE
            else _rows(suite, data_dir))
    items = [suite.adapter(name, row, i) for i, row in enumerate(rows)]
    if suite.grader == "choice" and not proto.choice_system:
        items = [replace(it, system_prompt=None) for it in items]
    return tuple(items)


def _suite(name: str, grader: str, adapter: Callable, hub: tuple, files: tuple[str, ...], description: str,
           paper_samples: int = 1) -> Suite:
    return Suite(name, grader, description, adapter, hub, files, paper_samples)


SUITES: dict[str, Suite] = {s.name: s for s in [
    _suite("aime24", "math", math_answer, ("HuggingFaceH4/aime_2024", None, "train"), ("aime24.jsonl",),
           "AIME 2024 I+II, 30 problems", 32),
    _suite("aime25", "math", math_answer, ("math-ai/aime25", None, "test"), ("aime25.jsonl",),
           "AIME 2025 I+II, 30 problems", 32),
    _suite("amc", "math", math_answer, ("AI-MO/aimo-validation-amc", None, "train"), ("amc83.jsonl", "amc.jsonl"),
           "AMC 12 2022+2023, 83 problems (the paper's AMC)", 32),
    _suite("amc23", "math", math_answer, ("math-ai/amc23", None, "test"), ("amc23.jsonl",),
           "AMC 2023, 40 problems (not the paper's AMC)"),
    _suite("math500", "math", math_answer, ("HuggingFaceH4/MATH-500", None, "test"), ("math500.jsonl",),
           "MATH-500"),
    _suite("minerva", "math", minerva_answer, ("math-ai/minervamath", None, "test"),
           ("minerva_math.jsonl", "minerva.jsonl"), "Minerva math, 272 problems"),
    _suite("olympiadbench", "math", olympiad_answer, ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"),
           ("olympiadbench.jsonl",), "OlympiadBench, English text-only open-ended math, 675 problems"),
    _suite("arc_c", "choice", choice_item, ("allenai/ai2_arc", "ARC-Challenge", "test"),
           ("arc_challenge.parquet", "valid.arc_c.parquet"), "ARC-Challenge test, 1,172 questions"),
    _suite("gpqa_diamond", "choice", choice_item, ("Idavidrein/gpqa", "gpqa_diamond", "train"),
           ("gpqa_diamond.parquet", "valid.gpqa.parquet"), "GPQA-Diamond, 198 questions"),
    _suite("mmlu_pro", "choice", choice_item, ("TIGER-Lab/MMLU-Pro", None, "test"),
           ("mmlu_pro_test.parquet", "valid.mmlu_pro.parquet"), "MMLU-Pro test, 12,032 questions, options A-J"),
    Suite("toy", "math", "held-out split of the embedded task, up to 100 problems per level 1-6 (527)",
          loader=_load_toy),
    Suite("toy_val", "math", "validation split of the embedded task: test-partition problems outside `toy`, 40 per "
          "level 2-6 (200); for choosing learning rates and checkpoints", loader=_load_embedded(
              "task", "validation_split", [2, 3, 4, 5, 6])),
    Suite("countdown", "math", "held-out split of the embedded Countdown task, up to 100 problems per level 1-5 (431)",
          loader=_load_embedded("countdown", "test_split", [1, 2, 3, 4, 5])),
    Suite("countdown_val", "math", "validation split of the Countdown task: test-partition problems outside "
          "`countdown`, 40 per level 2-5 (160)", loader=_load_embedded("countdown", "validation_split", [2, 3, 4, 5])),
]}
GROUPS: dict[str, list[str]] = {
    "math": ["aime24", "aime25", "amc", "math500", "minerva", "olympiadbench"],
    "general": ["arc_c", "gpqa_diamond", "mmlu_pro"],
}


def resolve_suites(names: list[str]) -> list[Suite]:
    """Suite names or group names -> suites, in order, without duplicates."""
    out: list[Suite] = []
    for name in names:
        for n in GROUPS.get(name, [name]):
            if n not in SUITES:
                raise UserError(f"eval.suites: unknown suite {n!r}; known suites: {', '.join(SUITES)}; "
                                f"groups: {', '.join(GROUPS)}")
            if SUITES[n] not in out:
                out.append(SUITES[n])
    return out
