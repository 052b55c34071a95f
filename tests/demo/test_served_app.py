"""The launched demo through gradio_client: streaming over the queue, concurrent users, Stop ends generation."""

import time

from gradio_client import Client

from wren_testing.demo import REPLY, SHOWN_REPLY, generation_threads, wait_until
from wrenlm.demo.rendering import reply_text

CHAT_SETTINGS = ("", 0.0, 0.95, 50)  # system prompt, temperature, top-p, top-k


def test_chat_and_completion_stream_through_the_queue(launch, reply_model, chat_tokenizer):
    client = Client(launch(reply_model, chat_tokenizer), verbose=False)
    job = client.submit("Hail, friend", *CHAT_SETTINGS, 64, api_name="/chat")
    assert job.result(timeout=60) == SHOWN_REPLY
    streamed = [output for output in job.outputs() if output]
    assert len(streamed) > 3 and streamed[-1] == SHOWN_REPLY
    # Each update is the whole reply so far, rendered; the text it carries grows token by token.
    texts = [reply_text(output) for output in streamed]
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:], strict=False))

    completion, notice = client.predict("Once upon a time", 0.0, 0.95, 50, 64, api_name="/complete")
    assert completion == REPLY and notice == ""
    assert wait_until(lambda: not generation_threads())


def test_several_users_are_served_at_once(launch, endless_model, chat_tokenizer):
    client = Client(launch(endless_model, chat_tokenizer, concurrency=3), verbose=False)
    jobs = [client.submit(f"user {i}", *CHAT_SETTINGS, 3000, api_name="/chat") for i in range(3)]
    most = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(job.done() for job in jobs):
        most = max(most, len(generation_threads()))
        if most == 3:
            break
        time.sleep(0.01)
    for job in jobs:
        job.cancel()
    assert most == 3
    assert wait_until(lambda: not generation_threads(), timeout=20)


def test_cancelling_a_request_ends_its_generation_thread(launch, endless_model, chat_tokenizer, streamers):
    client = Client(launch(endless_model, chat_tokenizer), verbose=False)
    job = client.submit("Go on forever", *CHAT_SETTINGS, 3900, api_name="/chat")
    assert wait_until(lambda: len(job.outputs()) > 3, timeout=30)
    job.cancel()  # the Stop button sends the same cancellation
    assert wait_until(lambda: not generation_threads(), timeout=20)
    (streamer,) = streamers
    assert streamer.generated < 3000  # cut short: without the stop it runs to 3900
