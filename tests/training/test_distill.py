"""Context distillation: the KL, and what the teacher and the student each read (aligned
rows, the cached prompt, long conversations, the model's window). Training:
test_distill_training.py; the run through the service: test_distill_runs.py."""

import copy
import math

import pytest
import torch

from tests.training.distill_builders import (
    PROMPT,
    _tokenizer,
    config,
    conversations,
    sharp_lm,
)
from training.config import DistillationConfig
from training.distill import (
    ConversationTokens,
    DistillationExample,
    PromptedTeacher,
    collate_rows,
    distillation_kl,
    train_distillation,
)

# The machine is shared: each test keeps to one core (tests/training/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


# A template like SmolLM2's: without a system message it writes a default one of its own.
DEFAULT_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a small bot.<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# --- the loss ---------------------------------------------------------------------------------


def test_the_kl_is_the_hand_computed_one_and_zero_only_for_equal_distributions():
    p = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]])
    q = torch.tensor([[0.25, 0.5, 0.25], [0.1, 0.2, 0.7]])
    # Position 1: 0.5 ln 2 + 0.25 ln(1/2) + 0 = 0.25 ln 2; position 2: equal, 0. Mean: 0.125 ln 2.
    kl = distillation_kl(p.log(), q.log())
    assert kl.item() == pytest.approx(0.125 * math.log(2), abs=1e-6)
    # The teacher comes first: KL is not symmetric.
    r = torch.tensor([[0.8, 0.1, 0.1]])
    s = torch.tensor([[0.4, 0.4, 0.2]])
    by_hand = 0.8 * math.log(2) + 0.1 * math.log(0.25) + 0.1 * math.log(0.5)
    assert distillation_kl(r.log(), s.log()).item() == pytest.approx(by_hand, abs=1e-6)
    assert distillation_kl(s.log(), r.log()).item() != pytest.approx(by_hand, abs=1e-3)
    # Equal distributions: zero, whatever constant the logits are shifted by.
    logits = torch.randn(5, 11)
    assert distillation_kl(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation_kl(logits, logits + 3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_kl(logits, logits.flip(-1)).item() > 0.1
    # The student's gradient is softmax(student) - teacher, over the positions' count.
    student = torch.zeros(1, 3, requires_grad=True)
    distillation_kl(p[:1].log(), student).backward()
    assert torch.allclose(student.grad, torch.full((1, 3), 1 / 3) - p[:1], atol=1e-6)


# --- what each model reads -------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, template",
    [("chat", None), ("chat", DEFAULT_SYSTEM_TEMPLATE), ("completion", None)],
    ids=["chat", "chat-default-system", "completion"],
)
def test_teacher_and_student_rows_line_up_on_the_conversation(mode, template):
    tokenizer = _tokenizer(template)
    model = sharp_lm(tokenizer)
    rendering = ConversationTokens(tokenizer, prompt=PROMPT, mode=mode, max_length=256)
    examples = conversations(3, seed=1, turns=2)
    rows = [rendering(example) for example in examples]
    for row, example in zip(rows, examples, strict=True):
        student_text = tokenizer.decode(row.student_ids)
        assert "helpful, honest and harmless" not in student_text  # no prompt for the student
        assert row.teacher_ids[0] == rendering.prefix_ids[-1]
        assert student_text.endswith(example.messages[-1]["content"])
        # The compared tokens are the same on both sides, and they are the conversation.
        n = row.targets
        assert n > 20 and row.teacher_ids[-n:] == row.student_ids[-n:]
        assert example.messages[0]["content"] in tokenizer.decode(row.student_ids[-n:])
    if template is DEFAULT_SYSTEM_TEMPLATE:
        # The student's default system message is its own; the teacher has the HHH one instead.
        assert tokenizer.decode(rows[0].student_ids).startswith("<|im_start|>system\nYou are")
        assert rows[0].targets == len(rows[0].student_ids) - len(
            tokenizer("<|im_start|>system\nYou are a small bot.<|im_end|>\n").input_ids
        )
    else:
        # Nothing before the conversation: the student cannot predict its very first token.
        assert all(row.targets == len(row.student_ids) - 1 for row in rows)

    # The cached prompt gives the logits of one long forward over prompt + conversation.
    teacher = PromptedTeacher(copy.deepcopy(model), rendering.prefix_ids)
    batch = collate_rows(rows, tokenizer.pad_token_id)
    cached = teacher.logits(batch["teacher_ids"], batch["teacher_mask"], batch["teacher_compare"])
    assert not cached.is_inference()
    full_prompted, bare = [], []
    with torch.no_grad():
        for row in rows:
            ids = rendering.prefix_ids[:-1] + row.teacher_ids
            end = len(ids) - 1
            full_prompted.append(model(torch.tensor([ids])).logits[0, end - row.targets : end])
            end = len(row.student_ids) - 1
            logits = model(torch.tensor([row.student_ids])).logits[0]
            bare.append(logits[end - row.targets : end])
    full_prompted, bare = torch.cat(full_prompted), torch.cat(bare)
    assert cached.shape == full_prompted.shape == bare.shape
    assert torch.allclose(cached, full_prompted, atol=1e-4)
    # Student == teacher on identical inputs: no distance. Without the prompt: a real one.
    assert distillation_kl(cached, full_prompted).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_kl(cached, bare).item() > 0.01


def test_long_conversations_keep_their_end_and_examples_must_end_with_a_response():
    tokenizer = _tokenizer(None)
    example = conversations(1, seed=2, turns=3)[0]
    whole = ConversationTokens(tokenizer, prompt=PROMPT, mode="chat", max_length=512)(example)
    rendering = ConversationTokens(tokenizer, prompt=PROMPT, mode="chat", max_length=16)
    row = rendering(example)
    assert len(whole.student_ids) > 60
    assert row.student_ids == whole.student_ids[-16:] and row.targets == 15
    assert row.teacher_ids == rendering.prefix_ids[-1:] + row.student_ids
    with pytest.raises(ValueError, match="assistant's response last"):
        DistillationExample([{"role": "user", "content": "hello?"}])
    with pytest.raises(ValueError, match="needs a prompt"):
        ConversationTokens(tokenizer, prompt="  ", mode="chat", max_length=16)
    with pytest.raises(ValueError, match="render_mode must be one of"):
        DistillationConfig(render_mode="raw")
    with pytest.raises(ValueError, match="unknown DistillationConfig keys: loss"):
        DistillationConfig.from_dict({"loss": "ranked"})


def test_a_prompt_and_conversation_past_the_models_window_are_refused():
    tokenizer = _tokenizer(None)
    student = sharp_lm(tokenizer)  # 512 positions
    long_prompt = " ".join([PROMPT] * 20)
    with pytest.raises(ValueError, match="positions; the model has 512: lower max_length"):
        train_distillation(
            student,
            copy.deepcopy(student),
            tokenizer,
            conversations(8, seed=1),
            config(),
            prompt=long_prompt,
            mode="chat",
        )
