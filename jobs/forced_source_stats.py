"""spark-submit entry point of the forced_source_stats job; the parameters are in
``conf/templates/forced_source_stats.yaml``.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit jobs/forced_source_stats.py \
        -p source=dp1.forced_source -p output=u_me.x
"""

import sys

from userbatch.facility.jobmain import job_main

if __name__ == "__main__":
    sys.exit(job_main("forced_source_stats"))
