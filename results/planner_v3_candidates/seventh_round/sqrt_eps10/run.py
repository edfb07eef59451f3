import sys, runpy
sys.path.insert(0, "/work/evalout/exp7")
import sqrtsel  # noqa
sys.argv = ["results.py"] + sys.argv[1:]
runpy.run_path("/work/main/benchmarks/results.py", run_name="__main__")
