"""``st4rtrack-play BAG [--rate R --loop --clock ...]``: publish a benchmark bag over ROS 2 with its recorded timing,
for machines without ``ros2 bag play`` (``ros.play``: the bag source, the timing loop and the publishers)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from st4rtrack_ros.ros import play

PROG = play.PROG


def build_parser() -> argparse.ArgumentParser:
    """Argument parser (separate so tests and docs can inspect it)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Publish a benchmark bag's topics over ROS 2 with the recorded timing (like `ros2 bag play`, "
        "for machines without rosbag2). ROS arguments go after --ros-args (e.g. -r /camera/image_raw:=/cam).",
    )
    p.add_argument("bag", type=Path, help="rosbag2 directory (mcap or sqlite3) or ROS 1 .bag file")
    p.add_argument("--rate", type=float, default=1.0, help="time scale: 2 = twice as fast (default: 1)")
    p.add_argument("--loop", action="store_true", help="start again at the end, until interrupted")
    p.add_argument(
        "--clock",
        type=float,
        nargs="?",
        const=40.0,
        default=None,
        metavar="HZ",
        help="publish rosgraph_msgs/Clock on /clock at HZ (default 40) for use_sim_time nodes",
    )
    p.add_argument("--topics", nargs="+", metavar="TOPIC", help="publish only these topics (default: all)")
    p.add_argument(
        "--qos-profile",
        choices=("reliable", "sensor"),
        default="reliable",
        help="reliable (default) or sensor: best effort, like camera drivers",
    )
    p.add_argument("--qos-depth", type=int, default=10, help="publisher queue depth (default: 10)")
    p.add_argument("--start-paused", action="store_true", help="wait for Enter on stdin (or SIGUSR1) before publishing")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait before publishing (default: 0)")
    p.add_argument(
        "--wait-for-subscribers",
        type=float,
        default=None,
        metavar="TIMEOUT",
        help="before publishing, wait up to TIMEOUT s until every topic (and /clock) has a subscriber",
    )
    p.add_argument(
        "--flush-timeout",
        type=float,
        default=3.5,
        metavar="S",
        help="at the end, wait up to S s until reliable subscribers acknowledged everything, so the last messages "
        "are not lost when the process exits (Fast DDS asks for acks every 3 s; 0 = do not wait; default: 3.5)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns 0, 2 (bad input) or 130 (interrupted)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args

    full = list(sys.argv if argv is None else [PROG, *argv])
    args = build_parser().parse_args(remove_ros_args(full)[1:])
    if args.rate <= 0 or args.qos_depth < 1 or (args.clock is not None and args.clock <= 0):
        print(f"{PROG}: --rate, --qos-depth and --clock must be > 0", file=sys.stderr)
        return 2
    if not args.bag.exists():
        print(f"{PROG}: {args.bag} does not exist", file=sys.stderr)
        return 2
    try:
        source = play.BagSource(args.bag, args.topics)
    except Exception as exc:  # rosbags raises several reader errors; all mean "cannot play"
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2

    stop, resume = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == getattr(signal, "SIGUSR1", None):
            resume.set()
        else:
            stop.set()
            resume.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, on_signal)

    context = rclpy.Context()
    rclpy.init(args=full, context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("st4rtrack_play", context=context)
    progress = play.Progress(source, enabled=not args.quiet)
    finished = True
    try:
        qos = play.publisher_qos(args.qos_profile, args.qos_depth)
        sink = play.RclpySink(node, source, qos, args.clock is not None)
        for topic, why in sink.skipped.items():
            print(f"[{PROG}] skipping {topic}: {why}", file=sys.stderr)
        if not sink.pubs:
            print(f"{PROG}: nothing to publish", file=sys.stderr)
            return 2
        if not args.quiet:
            print(
                f"[{PROG}] {args.bag}: {len(sink.pubs)} topics, {source.total} messages, rate {args.rate:g}"
                + (f", /clock at {args.clock:g} Hz" if args.clock else ""),
                file=sys.stderr,
            )
        if args.wait_for_subscribers is not None and \
                not play.wait_for_subscribers(sink, args.wait_for_subscribers, stop):
            if not stop.is_set():
                print(
                    f"[{PROG}] no subscriber on every topic after {args.wait_for_subscribers:g} s; publishing anyway",
                    file=sys.stderr,
                )
        if args.delay > 0:
            stop.wait(args.delay)
        if args.start_paused and not stop.is_set():
            print(f"[{PROG}] paused: press Enter (or send SIGUSR1) to start", file=sys.stderr)
            threading.Thread(target=play.resume_on_enter, args=(resume,), daemon=True).start()
            resume.wait()
        period = None if args.clock is None else 1.0 / args.clock
        skip = frozenset(sink.skipped)
        loop = 1
        while not stop.is_set():
            progress.start_pass(loop)
            _, finished = play.play_once(
                source.messages(skip), sink, rate=args.rate, clock_period_s=period, stop=stop, on_message=progress
            )
            if not (args.loop and finished):
                break
            loop += 1
        progress.show(end="\n")
        if finished and not stop.is_set() and args.flush_timeout > 0 and not sink.flush(args.flush_timeout):
            print(f"[{PROG}] some reliable subscribers did not acknowledge the last messages", file=sys.stderr)
        if not finished or stop.is_set():
            print(f"[{PROG}] interrupted", file=sys.stderr)
            return 130
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        source.close()


if __name__ == "__main__":
    sys.exit(main())
