"""`import ckptname` stays light: no TensorFlow, Keras or fsspec."""

import subprocess
import sys


def test_import_loads_no_heavy_module():
    code = (
        "import sys, ckptname; "
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'tensorflow', 'keras', 'fsspec', 'numpy'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
