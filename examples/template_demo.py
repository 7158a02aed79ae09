"""Render checkpoint names from a template and read them back by numbers.

Run: python examples/template_demo.py
"""

from ckptname import Template


def main() -> None:
    t = Template("ckpt/ep{epoch:02d}-b{batch:05d}-{val_loss:.3f}.keras")
    print(f"template: {t.text}")
    runs = [(e, e * 1200, 1.0 / (e + 1) - 0.3) for e in (1, 9, 10, 99, 100, 101)]
    names = [t.render(epoch=e, batch=b, val_loss=v) for e, b, v in runs]
    print("\nsorted as strings (what mtime ties and ls fall back to):")
    for name in sorted(names):
        print("  ", name)
    print("\nread back and ordered by the global batch count:")
    for name in sorted(names, key=lambda n: t.parse(n)["batch"]):
        print("  ", name, "->", t.parse(name))
    best = min(names, key=lambda n: t.parse(n)["val_loss"])
    print(f"\nbest by val_loss (as a number, negatives included): {best}")


if __name__ == "__main__":
    main()
