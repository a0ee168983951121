#!/bin/sh
#COMMONS --job-name=a -N 2 -n 4 -c 2
#COMMONS --mem=1G --time=1-00:00:00 --gpus 1
#COMMONS --array=0-15:4%2 --dependency=afterok:1:2,afterany:3
#COMMONS --qos=low --account=lab --requeue --hold
#COMMONS --output=/tmp/o-%j --error=/tmp/e-%A_%a --chdir=/tmp
hostname
