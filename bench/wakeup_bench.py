"""What one wake-up of an event loop costs: a bare aiohttp keep-alive client against the fast
local server, sending R requests a second either one per wake-up (evenly spaced, as a prober
whose targets all have their own start instants) or in bursts of B at once (R / B wake-ups a
second, as targets sharing grid instants, `prober/runtime/plan.py`), and, for reference, in
a loop with no pause. CPU per request, this process pinned to CPU 0, the server to CPU 1.

    python bench/wakeup_bench.py [--rates 66.7 667] [--bursts 1 2 4 7] [--seconds 20]
"""

from __future__ import annotations

import argparse
import time

from daemon_bench import baseline, paced_baseline, start_fast_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[66.7, 667.0])
    parser.add_argument("--bursts", type=int, nargs="+", default=[1, 2, 4, 7])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    server, url = start_fast_server()
    try:
        time.sleep(1.5)
        print(f"in a loop: {baseline(url, 5000) * 1e6:.0f} µs CPU a request")
        print("requests/s  burst  wake-ups/s  CPU µs/request")
        for rate in args.rates:
            for burst in args.bursts:
                cost = paced_baseline(url, rate, args.seconds, burst)
                print(f"{rate:10.1f}  {burst:5d}  {rate / burst:10.1f}  {cost * 1e6:14.0f}")
        print(f"in a loop: {baseline(url, 5000) * 1e6:.0f} µs CPU a request")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
