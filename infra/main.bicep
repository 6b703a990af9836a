// Azure resources for Intake. Placeholder until the deployment issue: it only names the parameters.
@description('Prefix for every resource name.')
param namePrefix string = 'intake'

@description('Azure region.')
param location string = resourceGroup().location

output functionAppName string = '${namePrefix}-func'
output location string = location
