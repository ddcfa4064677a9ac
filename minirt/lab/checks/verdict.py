"""What every exercise check shares: a verdict, and running the learner's code safely."""

import traceback


class Verdict:
    """The outcome of one check: passed or not, and what to tell the learner."""

    def __init__(self, exercise: str):
        self.exercise = exercise
        self.passed = True
        self.lines: list[str] = []

    def good(self, text: str) -> None:
        self.lines.append(f"  ✔ {text}")

    def bad(self, text: str, hint: str = "") -> None:
        self.passed = False
        self.lines.append(f"  ✘ {text}" + (f"\n    hint: {hint}" if hint else ""))

    def expect(self, condition: bool, text: str, hint: str = "") -> bool:
        """Record ``text`` as done when ``condition`` holds, else as the problem."""
        (self.good if condition else self.bad)(text, *([hint] if not condition else []))
        return condition

    def report(self) -> str:
        head = (f"✅ {self.exercise}: well done!" if self.passed
                else f"❌ {self.exercise}: not yet")
        return "\n".join([head] + self.lines)


def run_check(exercise: str, body, *args) -> bool:
    """Run ``body(verdict, *args)``, print the verdict, return whether it passed.

    Whatever the learner's code does (NotImplementedError for an unfinished
    exercise, a typo, an OSError from the kernel) becomes part of the verdict,
    never a traceback that stops the notebook.
    """
    verdict = Verdict(exercise)
    try:
        body(verdict, *args)
    except NotImplementedError:
        verdict.bad("not written yet", "replace the `raise NotImplementedError` with your code")
    except Exception as e:  # the learner's code may raise anything: explain it
        frame = traceback.extract_tb(e.__traceback__)[-1]
        verdict.bad(f"your code raised {type(e).__name__}: {e}",
                    f"line {frame.lineno}: {frame.line}" if frame.line else "")
    print(verdict.report())
    return verdict.passed
