#!/bin/sh
#COMMONS --job-name=ok
#COMMONS --time=never
echo x
