#COMMONS --job-name="a b" --export=X=1,Y=2
#COMMONS -t 5
echo
