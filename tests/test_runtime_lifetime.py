"""A session's lifetime under load: close() while other threads run, and the OS threads
many sessions leave behind (issue 21, items 2 and 3).  Each case runs in a child
process, so a hang or a crash fails the test instead of stalling pytest."""

from __future__ import annotations

import pytest
from isolated import assert_clean, run_isolated


@pytest.mark.slow
def test_close_while_eight_threads_run_returns_and_every_caller_gets_a_typed_error():
    out = assert_clean(run_isolated("""
        import threading, time
        import numpy as np
        from hetpart.errors import RuntimeFailure
        from hetpart.runtime import Session
        from hetpart.runtime.synthetic import chain

        model = chain(["cpu", "cuda", "cpu"], (16, 32), work=1)
        x = np.zeros((16, 32), np.float32)
        for trial in range(4):
            s = Session(model)
            ends = []

            def loop():
                try:
                    while True:
                        s.run({"x": x})
                except RuntimeFailure as e:  # the only way out: the session closed
                    ends.append("closed" in str(e))
                except BaseException as e:
                    ends.append(repr(e))

            threads = [threading.Thread(target=loop, daemon=True) for _ in range(8)]
            for t in threads:
                t.start()
            time.sleep(0.1 + 0.05 * trial)
            closer = threading.Thread(target=s.close, daemon=True)
            closer.start()
            closer.join(20)
            assert not closer.is_alive(), "close() hung"
            for t in threads:
                t.join(20)
            assert not any(t.is_alive() for t in threads), "a caller hung"
            assert ends == [True] * 8, ends
            assert s.threads_alive == 0 and s.buffer_bytes == 0
        print("ok")
    """, timeout=120))
    assert "ok" in out


@pytest.mark.slow
def test_submitted_runs_finish_or_fail_typed_when_closed():
    out = assert_clean(run_isolated("""
        import threading
        import numpy as np
        from hetpart.errors import RuntimeFailure
        from hetpart.runtime import Session
        from hetpart.runtime.synthetic import chain

        model = chain(["cpu", "cuda"], (16, 32), work=1)
        x = np.zeros((16, 32), np.float32)
        s = Session(model, slots=1)
        futures, refused = [], []

        def submitter():
            try:
                while True:
                    futures.append(s.submit({"x": x}))
            except RuntimeFailure:
                refused.append(1)

        t = threading.Thread(target=submitter, daemon=True)
        t.start()
        while len(futures) < 20:
            pass
        s.close()
        t.join(20)
        assert not t.is_alive() and refused == [1]
        for f in futures:  # every run that started has finished
            assert f.result(timeout=20)["t1"].shape == (16, 32)
        print("ok", len(futures))
    """, timeout=120))
    assert "ok" in out


@pytest.mark.slow
def test_many_sessions_leave_no_os_threads_behind():
    """Sessions whose worker threads size a TVM pool (cpu_threads, or a simulated GPU
    partition next to a CPU one) and whose simulated stream runs parallel kernels."""
    out = assert_clean(run_isolated("""
        import gc, os
        import numpy as np
        from hetpart.runtime import Session
        from hetpart.runtime.synthetic import chain

        def os_threads():
            return len(os.listdir("/proc/self/task"))

        model = chain(["cpu", "cuda"], (16, 32), work=1, parallel=True)
        x = np.zeros((16, 32), np.float32)
        counts = []
        for i in range(15):
            options = ({}, {"cpu_threads": 1}, {"inline": False})[i % 3]
            with Session(model, **options) as s:
                s.run({"x": x})
                s.submit({"x": x}).result()
            gc.collect()
            counts.append(os_threads())
        print("threads", counts)
        assert max(counts[6:]) <= counts[5], counts  # flat once every kind was made
    """, timeout=180))
    assert "threads" in out
