#!/bin/bash
# A comment before the directives is fine.
#COMMONS --job-name=sim -N 1
#COMMONS --ntasks 2 -c 4
#COMMONS --time 30 --mem=2G
#COMMONS --output=sim-%j.log --hold
echo hello
#COMMONS --time 99:00:00
