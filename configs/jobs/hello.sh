#!/bin/sh
# A sample batch job: directives work like #SBATCH; flags on the command line win.
#COMMONS --job-name=hello
#COMMONS --ntasks=1 --cpus-per-task=1
#COMMONS --time=5:00
#COMMONS --output=hello-%j.out
echo "Hello from job $COMMONS_JOB_ID on $COMMONS_NODE ($COMMONS_CPUS CPU) as $(id -un)"
echo "Working directory: $(pwd)"
