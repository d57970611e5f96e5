import pytest

from assistant.backends.base import Context, Message
from assistant.prompting import (
    fit_to_window,
    render,
    render_chat,
    render_completion,
    split_prefix,
)

PROMPT = "Below are a series of dialogues between various people and an AI assistant.\n"


def conversation(*contents: str) -> tuple[Message, ...]:
    """Alternating user/assistant messages, starting with the user."""
    roles = ("user", "assistant")
    return tuple(Message(roles[i % 2], text) for i, text in enumerate(contents))


def test_it_renders_the_papers_completion_format():
    context = Context(
        prompt=PROMPT,
        messages=conversation("Hi there.", "Hello! How can I help?", "What is 2+2?"),
    )

    assert render_completion(context) == (
        "Below are a series of dialogues between various people and an AI assistant."
        "\n\nHuman: Hi there."
        "\n\nAssistant: Hello! How can I help?"
        "\n\nHuman: What is 2+2?"
        "\n\nAssistant:"
    )


def test_it_starts_at_the_first_human_turn_without_a_prompt():
    context = Context(messages=conversation("Hi there."))

    assert render_completion(context) == "Human: Hi there.\n\nAssistant:"


def test_it_renders_the_prompt_as_a_system_message_for_chat_models(tokenizer):
    context = Context(prompt=PROMPT, messages=conversation("Hi.", "Hello!", "Bye?"))

    assert render_chat(context, tokenizer) == (
        f"<|im_start|>system\n{PROMPT}<|im_end|>\n"
        "<|im_start|>user\nHi.<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nBye?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("mode", ["completion", "chat"])
def test_it_splits_into_a_prompt_prefix_and_a_conversation_suffix(tokenizer, mode):
    short = Context(prompt=PROMPT, messages=conversation("Hi."))
    long = Context(prompt=PROMPT, messages=conversation("Hi.", "Hello!", "What is the sea?"))

    first = split_prefix(short, mode=mode, tokenizer=tokenizer)
    second = split_prefix(long, mode=mode, tokenizer=tokenizer)

    assert first.prefix == second.prefix != ""
    assert second.prefix + second.suffix == render(long, mode=mode, tokenizer=tokenizer)
    # Tokenized apart, the two halves give the same tokens as the whole text.
    ids = tokenizer(second.prefix).input_ids + tokenizer(second.suffix).input_ids
    assert ids == tokenizer(second.text).input_ids
    assert tokenizer.decode(ids) == second.text


def count_words(text: str) -> int:
    return len(text.split())


@pytest.mark.parametrize("mode", ["completion", "chat"])
def test_it_drops_the_oldest_messages_to_fit(tokenizer, mode):
    messages = conversation(
        "one one one one", "two two two two", "three three three", "four four", "five five"
    )
    context = Context(prompt="The prompt words.", messages=messages)
    full = count_words(render(context, mode=mode, tokenizer=tokenizer))

    rendered = fit_to_window(
        context, mode=mode, tokenizer=tokenizer, max_tokens=full - 5, count_tokens=count_words
    )

    # Dropping "one" alone would open with an assistant turn, so "two" goes with it.
    assert rendered.dropped_turns == 2
    assert rendered.text.count("The prompt words.") == 1
    assert "one" not in rendered.text and "two" not in rendered.text
    assert "three three three" in rendered.text and "five five" in rendered.text
    assert count_words(rendered.text) <= full - 5


def test_it_keeps_everything_when_it_fits(tokenizer):
    context = Context(prompt=PROMPT, messages=conversation("Hi.", "Hello!", "Bye?"))

    rendered = fit_to_window(context, mode="completion", max_tokens=1000, count_tokens=count_words)

    assert rendered.dropped_turns == 0
    assert rendered.text == render_completion(context)


def test_it_never_drops_the_prompt_or_the_last_message():
    context = Context(prompt="A long prompt " * 10, messages=conversation("Hi.", "Hello!", "Q?"))

    rendered = fit_to_window(context, mode="completion", max_tokens=33, count_tokens=count_words)
    assert rendered.dropped_turns == 2
    assert rendered.text.endswith("Human: Q?\n\nAssistant:")

    with pytest.raises(ValueError, match="window allows 20"):
        fit_to_window(context, mode="completion", max_tokens=20, count_tokens=count_words)
