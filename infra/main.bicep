// Intake on Azure: Function App (Flex Consumption, Python 3.11) with a user-assigned identity, identity-only
// storage, Key Vault for secrets, Application Insights with a workbook, and optional Azure OpenAI.
targetScope = 'resourceGroup'

@description('Prefix of every resource name (letters and digits, 3-11 characters).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'intake'

@description('Azure region; it must offer the Flex Consumption plan.')
param location string = resourceGroup().location

@description('Which AI provider the app uses.')
@allowed([
  'offline'
  'openai'
  'azure_openai'
])
param aiProvider string = 'offline'

@description('Create an Azure OpenAI account with model deployments (sets AI_PROVIDER to azure_openai).')
param deployAzureOpenAI bool = false

@description('Chat model deployed when deployAzureOpenAI is true.')
param chatModel string = 'gpt-4o-mini'

@description('Chat model version.')
param chatModelVersion string = '2024-07-18'

@description('Embedding model deployed when deployAzureOpenAI is true.')
param embeddingModel string = 'text-embedding-3-small'

@description('Instance memory of the Flex Consumption plan, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Always-ready instances for HTTP triggers (0 = scale to zero, cold starts possible).')
@minValue(0)
param alwaysReadyHttpInstances int = 0

@description('Upper bound of instances the app scales out to.')
@minValue(40)
param maximumInstanceCount int = 100

@description('Log level of the app.')
@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
])
param logLevel string = 'INFO'

@secure()
@description('OpenAI API key (only for aiProvider openai); stored in Key Vault.')
param openAiApiKey string = ''

@secure()
@description('HMAC key configured on the WAHA webhook; stored in Key Vault.')
param wahaHmacKey string = ''

@secure()
@description('API key of the WAHA server (X-Api-Key); stored in Key Vault.')
param wahaApiKey string = ''

@secure()
@description('Secret that signs job callbacks (Standard Webhooks): whsec_ and the base64 of 16+ random bytes; stored in Key Vault. The app does not start without it.')
@minLength(22)
param callbackSigningSecret string

@secure()
@description('Password of the SMTP server for e-mail notifications; stored in Key Vault.')
param smtpPassword string = ''

@secure()
@description('Token of the SMS API (Twilio-compatible); stored in Key Vault.')
param smsAuthToken string = ''

@description('Endpoint of an Azure AI Search service for large knowledge bases (https://<name>.search.windows.net); empty: search in the workers\' memory. Grant the app\'s identity Search Index Data Contributor and Search Service Contributor on it.')
param searchEndpoint string = ''

@description('Endpoint of an Azure Communication Services resource with an e-mail domain (https://<name>.communication.azure.com); set: e-mail notifications go through it with the app\'s identity, which needs a role that may send e-mail there; empty: SMTP.')
param acsEmailEndpoint string = ''

@description('Sender address of e-mail notifications (with ACS: an address of its connected, verified domain).')
param emailFrom string = ''

var suffix = uniqueString(resourceGroup().id, namePrefix)
var storageName = toLower(take('${namePrefix}${suffix}', 24))
var deploymentContainer = 'app-package'
var effectiveProvider = deployAzureOpenAI ? 'azure_openai' : aiProvider
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  cognitiveServicesOpenAIUser: '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-id-${suffix}'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: {
    name: 'Standard_LRS'
  }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled'
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainer
  properties: {
    publicAccess: 'None'
  }
}

resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${namePrefix}-logs-${suffix}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${namePrefix}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, namePrefix, 'intake-workbook')
  location: location
  kind: 'shared'
  properties: {
    displayName: 'Intake jobs'
    category: 'workbook'
    sourceId: insights.id
    serializedData: loadTextContent('workbook.json')
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: take('${namePrefix}kv${suffix}', 24)
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource openAiKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(openAiApiKey)) {
  parent: vault
  name: 'openai-api-key'
  properties: {
    value: openAiApiKey
  }
}

resource wahaHmacSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(wahaHmacKey)) {
  parent: vault
  name: 'waha-hmac-key'
  properties: {
    value: wahaHmacKey
  }
}

resource wahaApiSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(wahaApiKey)) {
  parent: vault
  name: 'waha-api-key'
  properties: {
    value: wahaApiKey
  }
}

resource callbackSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(callbackSigningSecret)) {
  parent: vault
  name: 'callback-signing-secret'
  properties: {
    value: callbackSigningSecret
  }
}

resource smtpSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(smtpPassword)) {
  parent: vault
  name: 'smtp-password'
  properties: {
    value: smtpPassword
  }
}

resource smsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(smsAuthToken)) {
  parent: vault
  name: 'sms-auth-token'
  properties: {
    value: smsAuthToken
  }
}

resource openAi 'Microsoft.CognitiveServices/accounts@2024-10-01' = if (deployAzureOpenAI) {
  name: '${namePrefix}-oai-${suffix}'
  location: location
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  properties: {
    customSubDomainName: '${namePrefix}-oai-${suffix}'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource chatDeployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = if (deployAzureOpenAI) {
  parent: openAi
  name: chatModel
  sku: {
    name: 'GlobalStandard'
    capacity: 50
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: chatModel
      version: chatModelVersion
    }
  }
}

resource embeddingDeployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = if (deployAzureOpenAI) {
  parent: openAi
  name: embeddingModel
  dependsOn: [
    chatDeployment
  ]
  sku: {
    name: 'Standard'
    capacity: 50
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: embeddingModel
      version: '1'
    }
  }
}

resource openAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (deployAzureOpenAI) {
  name: guid(resourceGroup().id, identity.id, roles.cognitiveServicesOpenAIUser)
  scope: openAi
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.cognitiveServicesOpenAIUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${namePrefix}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: '${namePrefix}-func-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReadyHttpInstances > 0 ? [
          {
            name: 'http'
            instanceCount: alwaysReadyHttpInstances
          }
        ] : []
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: [
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storage.name
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identity.properties.clientId
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: identity.properties.clientId
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: insights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identity.properties.clientId};Authorization=AAD'
        }
        {
          name: 'AI_PROVIDER'
          value: effectiveProvider
        }
        {
          name: 'LOG_LEVEL'
          value: logLevel
        }
        {
          name: 'JOB_WAIT_MAX_SECONDS'
          value: '25'
        }
        {
          name: 'HEALTH_TIMEOUT_SECONDS'
          value: '2'
        }
        {
          name: 'OPENAI_API_KEY'
          value: empty(openAiApiKey) ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=openai-api-key)'
        }
        {
          name: 'OPENAI_BASE_URL'
          value: ''
        }
        {
          name: 'OPENAI_MODEL'
          value: 'gpt-4o-mini'
        }
        {
          name: 'OPENAI_EMBEDDING_MODEL'
          value: 'text-embedding-3-small'
        }
        {
          name: 'OPENAI_TRANSCRIPTION_MODEL'
          value: 'gpt-4o-mini-transcribe'
        }
        {
          name: 'TRANSCRIPTION_TIMES'
          value: 'auto'
        }
        {
          name: 'AI_TIMEOUT_SECONDS'
          value: '30'
        }
        {
          name: 'AI_SDK_MAX_RETRIES'
          value: '1'
        }
        {
          name: 'AI_MAX_ATTEMPTS'
          value: '4'
        }
        {
          name: 'AI_RETRY_BASE_SECONDS'
          value: '2'
        }
        {
          name: 'AI_PRICE_TABLE'
          value: ''
        }
        {
          name: 'AZURE_OPENAI_ENDPOINT'
          value: deployAzureOpenAI ? openAi.properties.endpoint : ''
        }
        {
          name: 'AZURE_OPENAI_API_KEY'
          value: ''
        }
        {
          name: 'AZURE_OPENAI_API_VERSION'
          value: '2024-10-21'
        }
        {
          name: 'AZURE_OPENAI_CHAT_DEPLOYMENT'
          value: chatModel
        }
        {
          name: 'AZURE_OPENAI_EMBEDDING_DEPLOYMENT'
          value: embeddingModel
        }
        {
          name: 'AZURE_OPENAI_TRANSCRIPTION_DEPLOYMENT'
          value: 'whisper'
        }
        {
          name: 'INGEST_MAX_BYTES'
          value: '26214400'
        }
        {
          name: 'CALLBACK_MAX_ATTEMPTS'
          value: '6'
        }
        {
          name: 'CALLBACK_TIMEOUT_SECONDS'
          value: '10'
        }
        {
          name: 'CALLBACK_ALLOWED_HOSTS'
          value: ''
        }
        {
          name: 'WEBHOOK_RETRY_SCHEDULE'
          value: '5s,5m,30m,2h,5h,10h,10h'
        }
        {
          name: 'WEBHOOK_DISABLE_AFTER_DAYS'
          value: '5'
        }
        {
          name: 'WEBHOOK_ROTATION_GRACE_HOURS'
          value: '24'
        }
        {
          name: 'EMAIL_PROVIDER'
          value: empty(acsEmailEndpoint) ? 'smtp' : 'acs'
        }
        {
          name: 'ACS_EMAIL_ENDPOINT'
          value: acsEmailEndpoint
        }
        {
          name: 'ACS_EMAIL_CONNECTION_STRING'
          value: ''
        }
        {
          name: 'SMTP_HOST'
          value: ''
        }
        {
          name: 'SMTP_PORT'
          value: '587'
        }
        {
          name: 'SMTP_STARTTLS'
          value: 'true'
        }
        {
          name: 'SMTP_USER'
          value: ''
        }
        {
          name: 'SMTP_PASSWORD'
          value: empty(smtpPassword) ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=smtp-password)'
        }
        {
          name: 'EMAIL_FROM'
          value: emailFrom
        }
        {
          name: 'SMS_BASE_URL'
          value: ''
        }
        {
          name: 'SMS_ACCOUNT_SID'
          value: ''
        }
        {
          name: 'SMS_AUTH_TOKEN'
          value: empty(smsAuthToken) ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=sms-auth-token)'
        }
        {
          name: 'SMS_FROM'
          value: ''
        }
        {
          name: 'WAHA_SESSION'
          value: 'default'
        }
        {
          name: 'NOTIFY_RATE_LIMIT_PER_HOUR'
          value: '20'
        }
        {
          name: 'NOTIFY_MAX_ATTEMPTS'
          value: '5'
        }
        {
          name: 'DOCUMENT_PAGE_PARALLELISM'
          value: '8'
        }
        {
          name: 'DOCUMENT_MAX_PAGES'
          value: '50'
        }
        {
          name: 'DOCUMENT_MAX_PAGE_BYTES'
          value: '10485760'
        }
        {
          name: 'DOCUMENT_MAX_BYTES'
          value: '52428800'
        }
        {
          name: 'CALL_MAX_BYTES'
          value: '104857600'
        }
        {
          name: 'CALL_MAX_DURATION_SECONDS'
          value: '14400'
        }
        {
          name: 'CALL_CHUNK_SECONDS'
          value: '600'
        }
        {
          name: 'CALL_PIECE_SECONDS'
          value: '30'
        }
        {
          name: 'CALL_CHUNK_PARALLELISM'
          value: '8'
        }
        {
          name: 'WAHA_BASE_URL'
          value: 'http://127.0.0.1:3000'
        }
        {
          name: 'WAHA_API_KEY'
          value: empty(wahaApiKey) ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=waha-api-key)'
        }
        {
          name: 'WHATSAPP_BURST_SECONDS'
          value: '3'
        }
        {
          name: 'WHATSAPP_RATE_LIMIT_PER_MINUTE'
          value: '10'
        }
        {
          name: 'WHATSAPP_MAX_EVENT_AGE_SECONDS'
          value: '300'
        }
        {
          name: 'WHATSAPP_SEND_ATTEMPTS'
          value: '8'
        }
        {
          name: 'WHATSAPP_LOOK_AGAIN_SECONDS'
          value: '60'
        }
        {
          name: 'KB_SEARCH_BACKEND'
          value: empty(searchEndpoint) ? 'memory' : 'azure_search'
        }
        {
          name: 'AZURE_SEARCH_ENDPOINT'
          value: searchEndpoint
        }
        {
          name: 'AZURE_SEARCH_INDEX'
          value: 'knowledge'
        }
        {
          name: 'AZURE_SEARCH_API_KEY'
          value: ''
        }
        {
          name: 'WAHA_HMAC_KEY'
          value: empty(wahaHmacKey) ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=waha-hmac-key)'
        }
        {
          name: 'CALLBACK_SIGNING_SECRET'
          value: empty(callbackSigningSecret) ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=callback-signing-secret)'
        }
      ]
    }
  }
  dependsOn: [
    blobOwner
    queueContributor
    tableContributor
    secretsUser
    metricsPublisher
    packageContainer
  ]
}

output functionAppName string = app.name
output defaultHostName string = app.properties.defaultHostName
output makeIngestUrl string = 'https://${app.properties.defaultHostName}/api/ingest'
output makeDocumentUrl string = 'https://${app.properties.defaultHostName}/api/process-document'
output wahaWebhookUrl string = 'https://${app.properties.defaultHostName}/api/webhook'
output selftestUrl string = 'https://${app.properties.defaultHostName}/api/selftest'
output keyVaultName string = vault.name
output storageAccountName string = storage.name
